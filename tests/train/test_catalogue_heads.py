"""Issue #10 on the training side: several heads from a catalogue CSV, each choosing its own head type; rare
classes dropped or folded; staged classes in fast mode; ONNX Runtime features sharing the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import make_image, stable_seed
from tests.train.test_finetune import ft_cfg
from vestis.data import load_dataset
from vestis.models.checkpoint import load_checkpoint
from vestis.train import TrainConfig, train

RGB = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "grey": (128, 128, 128)}


def _catalogue(root, n=60, rare_every=0):
    """id,colour,warmth,kind: colour from the pixels; warmth implied by colour; kind is noise (a head that
    should prefer a linear head or at least may differ); every ``rare_every``-th row is a rare 'grey'."""
    rows = ["id,colour,warmth,kind,year"]
    for i in range(n):
        c = ["red", "green", "blue"][i % 3]
        if rare_every and i % rare_every == 0:
            c = "grey"
        make_image(root / "images" / f"{i}.jpg", RGB[c], seed=stable_seed("cat", i))
        warmth = "warm" if c == "red" else "cold"
        kind = ["a", "b"][stable_seed("kind", i) % 2]
        rows.append(f"{i},{c},{warmth},{kind},{2010 + i % 4}")
    (root / "styles.csv").write_text("\n".join(rows) + "\n")
    return root / "styles.csv"


def _cfg(data, tmp_path, **kw):
    base = dict(
        data=str(data),
        out=str(tmp_path / "run"),
        backbone="test_tiny",
        epochs=10,
        quiet=True,
        cache_dir=str(tmp_path / "cache"),
        workers=0,
        lr=1e-2,
        c=[0.01, 1.0],
        weight_decay=[1e-3],
    )
    return TrainConfig(**{**base, **kw})


def test_label_takes_a_comma_list():
    cfg = TrainConfig(data="x.csv", labels=["gender,articleType", "baseColour"])
    assert cfg.labels == ["gender", "articleType", "baseColour"]
    with pytest.raises(ValueError, match="distinct"):
        TrainConfig(data="x.csv", labels=["a,a"])


def test_options_checked():
    with pytest.raises(ValueError, match="rare"):
        TrainConfig(data="x.csv", rare="merge")
    with pytest.raises(ValueError, match="select_head"):
        TrainConfig(data="x.csv", labels=["a", "b"], select_head="c")
    with pytest.raises(ValueError, match="loss_weights"):
        TrainConfig(data="x.csv", labels=["a"], loss_weights={"b": 2.0})
    with pytest.raises(ValueError, match="loss weights"):
        TrainConfig(data="x.csv", labels=["a"], loss_weights={"a": -1.0})


def test_each_head_chooses_its_own_type_and_the_run_reloads(tmp_path):
    csv = _catalogue(tmp_path / "cat")
    summary = train(_cfg(csv, tmp_path, labels=["colour,warmth,kind"], runtime="torch"))
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    # every head was fitted with both head types, and its choice is the best of its own grid
    for head in ("colour", "warmth", "kind"):
        grid = [g for g in log["grid"] if g["head"] == head]
        assert {g["type"] for g in grid} == {"linear", "mlp"}
        best = max(grid, key=lambda g: g["val_score"])
        assert summary["selected"][head]["head"] == best["type"]
    model, config = load_checkpoint(tmp_path / "run")
    for head, sel in summary["selected"].items():
        want = sel["head"]
        got = config["head_types"].get(head, config["head"])["type"]
        assert got == want
        assert (len(model.head(head)) == 2) == (want == "linear")  # Dropout + Linear, or the MLP
    assert summary["metrics"]["validation"]["colour"]["top1"] >= 0.8
    # colour implies warmth in the training rows: the implication table is stored for evaluate/predict
    assert config["train_config"]["hierarchy"]["chain"] == ["colour", "warmth"]


def test_forcing_mixed_head_types_round_trips(tmp_path):
    """A model whose heads differ in type saves and loads with each head's own architecture."""
    from vestis.models import create_model
    from vestis.models.checkpoint import save_checkpoint
    from vestis.models.heads import HeadConfig

    model = create_model("test_tiny", pretrained=False, head=HeadConfig("linear"))
    model.add_head("a", ["x", "y"])
    model.add_head("b", ["p", "q", "r"], cfg=HeadConfig("mlp", hidden=7))
    save_checkpoint(tmp_path / "r", model)
    back, config = load_checkpoint(tmp_path / "r")
    assert config["head_types"] == {"b": {"type": "mlp", "hidden": 7, "dropout": 0.0}}
    assert sum(p.numel() for p in back.head("b").parameters()) == sum(
        p.numel() for p in model.head("b").parameters()
    )
    assert back.head_cfgs == {"b": HeadConfig("mlp", hidden=7)} and "a" not in back.head_cfgs


def test_rare_classes_folded_into_other_in_every_split(tmp_path):
    csv = _catalogue(tmp_path / "cat", n=60, rare_every=20)  # 3 grey rows
    ds = load_dataset(csv, labels=["colour"], fold_rare=5, seed=0)
    assert not any(s.labels["colour"] == "grey" for s in ds.samples)
    assert sum(s.labels["colour"] == "other" for s in ds.samples) == 3
    assert any("folded into 'other'" in n and "grey" in n for n in ds.notes)
    summary = train(_cfg(csv, tmp_path, labels=["colour"], min_per_class=5, rare="fold", head="linear"))
    model, config = load_checkpoint(tmp_path / "run")
    assert "other" in model.classes["colour"] and "grey" not in model.classes["colour"]
    assert config["data"]["load"]["fold_rare"] == 5  # evaluation re-reads the data folded the same way
    assert summary["metrics"]["validation"]["colour"]["top1"] >= 0.5
    # dropping (the default) keeps grey out of the head instead
    train(_cfg(csv, tmp_path, labels=["colour"], min_per_class=5, head="linear", out=str(tmp_path / "r2")))
    model2, config2 = load_checkpoint(tmp_path / "r2")
    assert "grey" not in model2.classes["colour"] and "other" not in model2.classes["colour"]
    assert "fold_rare" not in config2["data"]["load"]


def test_fast_mode_stages_report_both_groups(tmp_path):
    rows = ["id,colour"]
    counts = {"red": 24, "green": 20, "blue": 16, "grey": 12}
    i = 0
    for c, k in counts.items():
        for _ in range(k):
            make_image(tmp_path / "cat" / "images" / f"{i}.jpg", RGB[c], seed=stable_seed("st", i))
            rows.append(f"{i},{c}")
            i += 1
    (tmp_path / "cat" / "styles.csv").write_text("\n".join(rows) + "\n")
    summary = train(_cfg(tmp_path / "cat" / "styles.csv", tmp_path, labels=["colour"], stages="top:2,rest"))
    groups = summary["metrics"]["groups"]
    assert set(groups["final"]) == {"top:2", "rest"}
    assert groups["stages"][0]["stage"] == "top:2" and groups["stages"][0]["groups"]["top:2"]["n"] > 0
    assert "change" in groups["effect"]["top:2"]
    model, config = load_checkpoint(tmp_path / "run")
    assert sorted(model.classes["colour"]) == ["blue", "green", "grey", "red"]
    assert config["train_config"]["groups"][0] == {"stage": "top:2", "classes": ["green", "red"]}


def test_onnx_features_share_the_cache_with_torch(colour_folder, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import vestis.engine.features as features
    from vestis.engine.load import feature_runner
    from vestis.models import create_model

    model = create_model("test_tiny", pretrained=False)
    ort = feature_runner(model, "cpu", "fp32", "auto", cache_dir=tmp_path)
    torch_runner = feature_runner(model, "cpu", "fp32", "torch")
    assert ort.runtime == "onnx" and torch_runner.runtime == "torch"
    assert ort.fingerprint == torch_runner.fingerprint
    paths = sorted((colour_folder / "train" / "red").iterdir())[:6]
    a = features.extract_features(ort, paths, cache_dir=tmp_path / "c", progress=False, workers=0)
    b = features.extract_features(torch_runner, paths, cache=False, progress=False, workers=0)
    np.testing.assert_allclose(a.feats, b.feats, rtol=1e-4, atol=1e-5)

    def fail(*args, **kw):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(features, "run_batches", fail)
    features.extract_features(torch_runner, paths, cache_dir=tmp_path / "c", progress=False, workers=0)
    # a backbone export predicts nothing: vestis.load on it says so
    import vestis

    onnx_file = next((tmp_path / "onnx").glob("backbone-*.onnx"))
    with pytest.raises(ValueError, match="no heads"):
        vestis.load(onnx_file).predict([str(paths[0])])
    assert vestis.load(onnx_file).embed([str(paths[0])]).shape == (1, model.num_features)


def test_linear_path_warm_start_needs_fewer_iterations_and_mlp_epochs_scale():
    from vestis.models.heads import HeadConfig
    from vestis.train.probe import fit_head, mlp_epochs

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (600, 1, 64)).astype(np.float32)
    y = (X[:, 0] @ rng.normal(0, 1, (64, 5)) + rng.normal(0, 2, (600, 5))).argmax(1)
    cfg = TrainConfig(data="x", lbfgs_iter=300)
    fit = (X[:450], y[:450], X[450:], y[450:], 5, HeadConfig("linear"), cfg)
    warm: dict = {}
    fit_head(*fit, 0.1, warm=warm)
    _, s_warm, it_warm = fit_head(*fit, 1.0, warm=warm)
    _, s_cold, it_cold = fit_head(*fit, 1.0)
    assert it_warm < it_cold and abs(s_warm - s_cold) <= 0.02  # the same optimum, reached sooner
    assert mlp_epochs(300, 30) == 60 and mlp_epochs(70_000, 256) == 22 and mlp_epochs(10**7, 256) == 10


def test_colour_stats_train_export_and_agree(colour_folder, tmp_path):
    """--colour-stats: fast mode computes backbone features and colour statistics apart (each cached); the saved
    model computes both in one graph, in PyTorch and in ONNX Runtime, and they agree."""
    import vestis
    from vestis.engine.colour import ColourRunner
    from vestis.engine.features import extract_features
    from vestis.engine.infer import infer
    from vestis.models.colour import NUM_STATS

    summary = train(_cfg(colour_folder, tmp_path, colour_stats=True, head="linear", runtime="torch"))
    assert summary["metrics"]["validation"]["label"]["top1"] >= 0.9
    model, config = load_checkpoint(tmp_path / "run")
    assert config["colour_stats"] is True and model.colour_stats
    paths = sorted((colour_folder / "test" / "red").iterdir())[:3]
    stats = extract_features(ColourRunner(model.preprocess), paths, cache=False, progress=False, workers=0)
    assert stats.feats.shape == (3, 1, NUM_STATS)
    red = stats.feats[:, 0, :3].mean(0)
    assert red[0] > 0.7 and red[1] < 0.3  # mean product colour of the red images is red
    torch_model = vestis.load(tmp_path / "run", runtime="torch")
    emb_t = infer(torch_model.runner, paths, ("plain",), 8, 0).features[:, 0]
    np.testing.assert_allclose(emb_t[:, -NUM_STATS:], stats.feats[:, 0], atol=1e-5)
    pytest.importorskip("onnxruntime")
    onnx_model = vestis.load(tmp_path / "run", runtime="onnx")
    emb_o = infer(onnx_model.runner, paths, ("plain",), 8, 0).features[:, 0]
    np.testing.assert_allclose(emb_o, emb_t, rtol=1e-4, atol=1e-4)
    assert [r["predictions"]["label"][0]["label"] for r in onnx_model.predict([str(p) for p in paths])] == [
        "red"
    ] * 3
    with pytest.raises(ValueError, match="colour_stats needs mode fast"):
        TrainConfig(data="x", mode="finetune", colour_stats=True)


def test_finetune_several_heads_masked_weighted_and_selected_on_one(tmp_path):
    """Fine-tuning: a row with no value for one head still trains the others (that head's loss is masked),
    heads are weighed by --loss-weight, and epochs can be selected on one named head."""
    import torch

    from vestis.train.history import score_heads
    from vestis.train.recipe import head_loss

    logits = torch.randn(4, 3, requires_grad=True)
    fn = torch.nn.CrossEntropyLoss()
    none = head_loss(fn, logits, torch.tensor([-1, -1, -1, -1]), None, 1.0)
    assert none.item() == 0.0 and none.requires_grad  # no labelled rows: zero, still in the graph
    some = head_loss(fn, logits, torch.tensor([0, -1, 2, -1]), None, 1.0)
    assert some.item() == pytest.approx(fn(logits[[0, 2]], torch.tensor([0, 2])).item())

    csv = _catalogue(tmp_path / "cat", n=48)
    text = (tmp_path / "cat" / "styles.csv").read_text().splitlines()
    blank = [
        ",".join(p if k != 2 else "" for k, p in enumerate(r.split(","))) if i % 4 == 0 else r
        for i, r in enumerate(text[1:])
    ]
    csv.write_text("\n".join([text[0], *blank]) + "\n")  # every 4th row has no 'warmth'
    cfg = ft_cfg(
        csv,
        tmp_path,
        epochs=2,
        labels=["colour", "warmth"],
        loss_weights={"warmth": 0.5},
        select_head="colour",
    )
    summary = train(cfg)
    assert set(summary["metrics"]["validation"]) == {"colour", "warmth"}
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train_config"]["training"]["loss_weights"] == {"warmth": 0.5}
    assert config["train_config"]["training"]["select_head"] == "colour"

    probs = {"a": np.array([[0.9, 0.1], [0.2, 0.8]]), "b": np.array([[0.9, 0.1], [0.9, 0.1]])}
    ys = {"a": np.array([0, 1]), "b": np.array([0, 1])}
    classes = {"a": ["x", "y"], "b": ["x", "y"]}
    ok = np.ones(2, bool)
    assert score_heads(probs, ok, ys, classes, "top1")["mean"]["score"] == pytest.approx(0.75)
    assert score_heads(probs, ok, ys, classes, "top1", "b")["mean"]["score"] == pytest.approx(0.5)


def test_fit_pad_is_recorded_and_used(colour_folder, tmp_path):
    train(_cfg(colour_folder, tmp_path, fit="pad", head="linear", runtime="torch"))
    model, config = load_checkpoint(tmp_path / "run")
    assert config["preprocess"]["fit"] == "pad" and model.preprocess.fit == "pad"
    with pytest.raises(ValueError, match="fit"):
        TrainConfig(data="x", fit="stretch")


def test_auto_skips_the_linear_head_on_large_data(colour_folder, tmp_path, monkeypatch):
    import vestis.train.fast as fast

    monkeypatch.setattr(fast, "AUTO_LINEAR_MAX_ROWS", 10)  # the 30 training images x 2 views are "large"
    train(_cfg(colour_folder, tmp_path, runtime="torch"))
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert {g["type"] for g in log["grid"]} == {"mlp"}
    train(_cfg(colour_folder, tmp_path, runtime="torch", head="linear", out=str(tmp_path / "r2")))
    log = json.loads((tmp_path / "r2" / "train_log.json").read_text())
    assert {g["type"] for g in log["grid"]} == {"linear"}  # asked for: fitted whatever the size


def test_colour_stats_skip_unreadable_images_and_count_them(colour_folder, tmp_path):
    (colour_folder / "train" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (colour_folder / "train" / "red" / "empty.jpg").write_bytes(b"")
    summary = train(_cfg(colour_folder, tmp_path, colour_stats=True, head="linear", runtime="torch"))
    skipped = json.loads((tmp_path / "run" / "skipped.json").read_text())
    names = {s["item"].rsplit("/", 1)[-1] for s in skipped}
    assert {"broken.png", "empty.jpg"} <= names and summary["skipped"] == len(skipped)
    assert summary["metrics"]["validation"]["label"]["top1"] >= 0.9
