"""Fine-tuning on tiny synthetic images with the test_tiny backbone (seconds each)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import make_image, stable_seed
from vestis.evaluate.runner import evaluate_run
from vestis.models.checkpoint import load_checkpoint
from vestis.models.preprocess import Preprocess, resolve_transform
from vestis.models.registry import create_model
from vestis.train import TrainConfig, train
from vestis.train.ema import EMA
from vestis.train.recipe import lr_scale, mix_batch
from vestis.train.sampler import EpochSampler

PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (220, 220, 30),
    "purple": (150, 30, 160),
    "cyan": (30, 200, 210),
    "grey": (128, 128, 128),
}


def ft_cfg(data, tmp_path, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(tmp_path / "run"),
        mode="finetune",
        backbone="test_tiny",
        epochs=3,
        quiet=True,
        workers=0,
        cache_dir=str(tmp_path / "cache"),
        precision="fp32",
        batch_size=8,
        augment="light",
        lr=0.03,
        tensorboard=False,
    )
    return TrainConfig(**{**base, **kw})


def make_catalogue(root: Path) -> Path:
    """styles.csv + images/: 5 colour classes of falling frequency in even years, 'grey' only in odd years."""
    rows, k = ["id,articleType,year"], 0
    counts = {"red": 14, "green": 12, "blue": 10, "yellow": 8, "purple": 7}
    for c, n in [*counts.items(), ("grey", 0)]:
        for i in range(n + 3):  # + 3 test images (odd year) per class
            year = 2012 if i < n else 2013
            make_image(root / "images" / f"{k}.jpg", PALETTE[c], size=(36, 36), seed=k)
            rows.append(f"{k},{c},{year}")
            k += 1
    (root / "styles.csv").write_text("\n".join(rows) + "\n")
    return root / "styles.csv"


def rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_finetune_learns_saves_and_evaluates(colour_folder, tmp_path):
    summary = train(ft_cfg(colour_folder, tmp_path, head_init="random", epochs=6))
    run = tmp_path / "run"
    assert summary["metrics"]["validation"]["label"]["top1"] >= 0.9  # from a random head: it learned
    config = json.loads((run / "config.json").read_text())
    assert config["includes_backbone"] is True and config["train_config"]["mode"] == "finetune"
    assert config["pretrained"] is True  # how the weights began, also after the best model is reloaded
    assert config["train_config"]["views"] == ["plain", "flip"]
    assert config["data"]["load"]["source"] == str(colour_folder)
    model, _ = load_checkpoint(run)
    assert model.classes == {"label": ["blue", "green", "red"]} and model.pretrained is True
    fresh = create_model("test_tiny")
    assert not torch.equal(model.backbone.body[0].weight, fresh.backbone.body[0].weight)  # backbone trained
    report = evaluate_run(run, split="test", quiet=True, cache_dir=str(tmp_path / "cache"))
    assert report["heads"]["label"]["n"] == 12 and report["heads"]["label"]["top1"] >= 0.8
    log = json.loads((run / "train_log.json").read_text())
    assert {r["class"] for r in log["per_class"]} == {"blue", "green", "red"}
    assert len(rows(run)) == summary["epochs_run"] == 6


def test_bf16_channels_last_and_probe_init(colour_folder, tmp_path):
    summary = train(ft_cfg(colour_folder, tmp_path, precision="bf16", epochs=1, lr=1e-3))
    r = rows(tmp_path / "run")[0]
    assert math.isfinite(r["train_loss"]) and r["images_per_s"] > 0
    assert summary["metrics"]["validation"]["label"]["top1"] >= 0.9  # the probed head is right at once


def test_augment_options():
    pre = Preprocess(input_size=32, crop_pct=1.0)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8))
    for augment in ("none", "light", "trivial", "randaug"):
        tf = resolve_transform(pre, train=True, augment=augment, crop_scale=0.5, erase=0.5)
        outs = [tf(img) for _ in range(4)]
        assert outs[0].shape == (3, 32, 32)
        assert any(not torch.equal(outs[0], o) for o in outs[1:])  # random
    assert resolve_transform(pre)(img).shape == (32, 32, 3)  # eval: the uint8 crop, normalised in the graph
    assert resolve_transform(pre, train=True, size=24)(img).shape == (3, 24, 24)  # --train-size
    with pytest.raises(ValueError, match="augment"):
        resolve_transform(pre, train=True, augment="heavy")
    for bad in (
        dict(augment="heavy"),
        dict(crop_scale=0.0),
        dict(erase=2.0),
        dict(mixup=-1.0),
        dict(sampler="oversample"),
        dict(ema_decay=1.0),
        dict(patience=-1),
        dict(stages="top:5"),
        dict(stages="rest,top:5"),
        dict(weight_decay=[0.01, 0.1]),
        dict(head_init="zeros"),
        dict(train_size=4),
        dict(freeze=-1),
    ):
        with pytest.raises(ValueError):
            TrainConfig(data="x", mode="finetune", **bad)
    with pytest.raises(ValueError, match="resume"):
        TrainConfig(data="x", resume="runs/x")  # fast mode cannot resume
    # fast mode: None = scaled to the data (vestis.train.probe.mlp_epochs); finetune: 15 per stage
    assert TrainConfig(data="x").epochs is None and TrainConfig(data="x", mode="finetune").epochs == 15
    assert (
        TrainConfig(data="x", mode="finetune").freeze_bn is True
    )  # pretrained: keep its BatchNorm statistics
    assert TrainConfig(data="x", mode="finetune", pretrained=False).freeze_bn is False


def test_mixup_cutmix():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16)
    same, perm, lam = mix_batch(x, 0.0, 0.0)
    assert same is x and perm is None and lam == 1.0
    mixed, perm, lam = mix_batch(x, 0.4, 0.0)
    assert 0 <= lam <= 1 and torch.allclose(mixed, lam * x + (1 - lam) * x[perm], atol=1e-6)
    cut, perm, lam = mix_batch(x, 0.0, 1.0)
    from_other = (cut != x).any(1)  # pixels taken from the partner image (a box)
    changed = from_other.float().mean(dim=(1, 2))
    moved = perm != torch.arange(6)
    assert torch.allclose(changed[moved], torch.full_like(changed[moved], 1 - lam), atol=0.02)


def test_lr_schedule():
    assert lr_scale(0, 100, 10, 0.01) == pytest.approx(0.1)
    assert lr_scale(9, 100, 10, 0.01) == pytest.approx(1.0)
    assert lr_scale(100, 100, 10, 0.01) == pytest.approx(0.01)
    assert lr_scale(40, 100, 10, 0.0) < lr_scale(20, 100, 10, 0.0)


def imbalanced_folder(root: Path) -> Path:
    for split, n in (
        ("train", {"red": 16, "green": 6, "blue": 3}),
        ("validation", {"red": 3, "green": 3, "blue": 3}),
    ):
        for c, k in n.items():
            for i in range(k):
                make_image(root / split / c / f"{c}{i}.png", PALETTE[c], seed=stable_seed(split, c, i))
    return root


@pytest.mark.parametrize(
    "loss, sampler, mix",
    [
        ("ce", "balanced", {}),
        ("weighted", "random", {"mixup": 0.4}),
        ("focal", "random", {"cutmix": 1.0, "mixup": 0.2}),
    ],
)
def test_losses_samplers_and_mixing_train(tmp_path, loss, sampler, mix):
    data = imbalanced_folder(tmp_path / "imb")
    summary = train(ft_cfg(data, tmp_path, loss=loss, sampler=sampler, epochs=2, **mix))
    assert math.isfinite(rows(tmp_path / "run")[-1]["train_loss"])
    table = {
        r["class"]: r for r in json.loads((tmp_path / "run" / "train_log.json").read_text())["per_class"]
    }
    assert table["red"]["train"] == 16 and table["blue"]["train"] == 3
    if loss == "ce":
        assert table["blue"]["loss_weight"] == table["red"]["loss_weight"] == 1.0
    else:  # inverse frequency: the rare class weighs more
        assert table["blue"]["loss_weight"] > table["green"]["loss_weight"] > table["red"]["loss_weight"]
    if sampler == "balanced":
        assert table["blue"]["draw_share"] == table["red"]["draw_share"] == pytest.approx(1 / 3, abs=1e-3)
    else:
        assert table["red"]["draw_share"] == pytest.approx(16 / 25, abs=1e-3)
    assert summary["metrics"]["validation"]["label"]["n"] == 9


def test_balanced_sampler_draws_classes_uniformly():
    groups = np.array([0] * 90 + [1] * 9 + [2] * 1)
    s = EpochSampler(groups, balanced=True, seed=1)
    drawn = []
    for epoch in range(20):
        s.set_epoch(epoch)
        drawn += list(s)
    share = np.bincount(groups[drawn], minlength=3) / len(drawn)
    assert np.allclose(share, 1 / 3, atol=0.05)
    plain = EpochSampler(groups, seed=1)
    plain.set_epoch(3)
    assert sorted(plain) == list(range(100)) and list(plain) == list(plain)  # a permutation, deterministic
    plain.set_epoch(4)
    first = list(plain)
    plain.set_epoch(3)
    assert first != list(plain)
    shards = [list(EpochSampler(groups, seed=1, rank=r, world=3)) for r in range(3)]
    assert [len(x) for x in shards] == [34, 34, 34] and set().union(*shards) == set(range(100))


def test_ema():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9)
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()(torch.randn(4, 2))  # BatchNorm counts a batch
    ema.update(model)
    d = min(0.9, 2 / 11)
    assert torch.allclose(ema.module[0].weight, d * before + (1 - d) * model[0].weight)
    assert ema.module[1].num_batches_tracked.item() == 1
    for _ in range(200):
        ema.update(model)
    assert ema.rate() == 0.9 and torch.allclose(ema.module[0].weight, model[0].weight, atol=1e-6)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_early_stopping_stops(colour_folder, tmp_path):
    summary = train(ft_cfg(colour_folder, tmp_path, epochs=20, patience=2))
    assert summary["epochs_run"] == summary["best_epoch"] + 2 < 20
    assert len(rows(tmp_path / "run")) == summary["epochs_run"]


def test_logs_history_and_tensorboard(colour_folder, tmp_path):
    train(ft_cfg(colour_folder, tmp_path, epochs=2, tensorboard=True))
    run = tmp_path / "run"
    r = rows(run)
    assert [x["epoch"] for x in r] == [1, 2]
    for key in ("train_loss", "val_loss", "val_top1", "val_macro_f1", "lr", "seconds", "images_per_s"):
        assert isinstance(r[0][key], float), key
    assert r[1]["lr"] < r[0]["lr"]  # cosine after one warm-up epoch
    assert (run / "history.png").stat().st_size > 5000
    assert list((run / "tb").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("image_cache", [False, True])
def test_unreadable_images_skipped_and_counted(colour_folder, tmp_path, image_cache):
    (colour_folder / "train" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (colour_folder / "validation" / "green" / "empty.jpg").write_bytes(b"")
    summary = train(ft_cfg(colour_folder, tmp_path, head_init="random", epochs=1, image_cache=image_cache))
    skipped = {
        Path(s["item"]).name: s["reason"] for s in json.loads((tmp_path / "run" / "skipped.json").read_text())
    }
    assert "broken.png" in skipped and skipped["empty.jpg"] == "empty file"
    assert summary["skipped"] == len(skipped) and rows(tmp_path / "run")[0]["unreadable"] == 1
    assert summary["metrics"]["validation"]["label"]["n"] == 12  # the empty file is not scored


def test_grow_head_keeps_learned_rows():
    model = create_model("test_tiny", heads={"label": ["b", "d"]})
    old = model.head("label")[-1]
    model.grow_head("label", ["a", "b", "c", "d"])
    new = model.head("label")[-1]
    assert new.weight.shape == (4, 16) and model.classes["label"] == ["a", "b", "c", "d"]
    assert torch.equal(new.weight[1], old.weight[0]) and torch.equal(new.weight[3], old.weight[1])
    assert torch.equal(new.bias[[1, 3]], old.bias)
    with pytest.raises(ValueError, match="drop"):
        model.grow_head("label", ["a", "b"])


def test_staged_classes_grow_head_and_report_groups(tmp_path, monkeypatch):
    from vestis.models.heads import VestisModel

    csv = make_catalogue(tmp_path / "cat")
    grown = []
    original = VestisModel.grow_head

    def checked_grow(self, name, classes):  # rows before and after growth, by class name
        before = {c: self.head(name)[-1].weight[i].clone() for i, c in enumerate(self.classes[name])}
        original(self, name, classes)
        after = self.head(name)[-1].weight
        grown.append({c: torch.equal(after[classes.index(c)], w) for c, w in before.items()})

    monkeypatch.setattr(VestisModel, "grow_head", checked_grow)
    summary = train(
        ft_cfg(csv, tmp_path, split="year:even", val=0.3, stages="top:3,rest", epochs=2, patience=0)
    )
    assert grown == [{"blue": True, "green": True, "red": True}]
    model, config = load_checkpoint(tmp_path / "run")
    assert model.classes["articleType"] == ["blue", "green", "red", "purple", "yellow"]  # learned rows first
    groups = summary["metrics"]["groups"]
    assert set(groups["final"]) == {"top:3", "rest"} and groups["final"]["rest"]["n"] > 0
    assert groups["stages"][0]["groups"]["top:3"]["n"] == groups["final"]["top:3"]["n"]
    assert "change" in groups["effect"]["top:3"]
    assert any("grey" in n and "no training images" in n for n in summary["notes"])  # reported, not scored
    assert [r["stage"] for r in rows(tmp_path / "run")] == [0, 0, 1, 1]
    assert config["train_config"]["groups"][0] == {"stage": "top:3", "classes": ["blue", "green", "red"]}
    report = evaluate_run(tmp_path / "run", split="test", quiet=True, cache_dir=str(tmp_path / "cache"))
    assert any("grey" in n for n in report["notes"])


def test_plan_stages_rest_and_all():
    from vestis.data import DataSet, Sample
    from vestis.train.stages import plan_stages

    counts = {"a": 9, "b": 7, "c": 5, "d": 3, "e": 1}
    samples = [Sample(Path(f"{c}{i}.jpg"), {"t": c}, "train") for c, n in counts.items() for i in range(n)]
    samples.append(Sample(Path("z.jpg"), {"t": "z"}, "test"))  # a class without training images
    ds = DataSet(samples, ["t"])
    notes = []
    rest = plan_stages(
        ds, TrainConfig(data="x", mode="finetune", stages="top:2,rest", min_per_class=2), notes
    )
    assert [(s.name, s.group, s.classes["t"], sorted(s.train["t"])) for s in rest] == [
        ("top:2", ["a", "b"], ["a", "b"], ["a", "b"]),
        ("rest", ["c", "d"], ["a", "b", "c", "d"], ["c", "d"]),  # trains on the rest only
    ]
    assert any("'e'" in n and "dropped" in n for n in notes) and any("'z'" in n for n in notes)
    every = plan_stages(ds, TrainConfig(data="x", mode="finetune", stages="top:2,all"), [])
    assert sorted(every[1].train["t"]) == ["a", "b", "c", "d", "e"]  # fine-tunes on every class
    with pytest.raises(ValueError, match="nothing"):
        plan_stages(ds, TrainConfig(data="x", mode="finetune", stages="top:5,rest"), [])


def test_freeze_keeps_early_layers_and_their_statistics(colour_folder, tmp_path):
    summary = train(ft_cfg(colour_folder, tmp_path, head_init="random", epochs=4, freeze=1, train_size=24))
    assert summary["metrics"]["validation"]["label"]["top1"] >= 0.9  # still learns through the unfrozen stage
    model, _ = load_checkpoint(tmp_path / "run")
    fresh = create_model("test_tiny")
    for i in (0, 1):  # the stem (conv + BatchNorm): weights and running statistics untouched
        for k, v in fresh.backbone.body[i].state_dict().items():
            assert torch.equal(model.backbone.body[i].state_dict()[k], v), (i, k)
    assert not torch.equal(model.backbone.body[3].weight, fresh.backbone.body[3].weight)  # the stage trained


def test_freeze_modes():
    m = create_model("test_tiny", heads={"a": ["x", "y"]})
    assert m.freeze(1) == ["body.0", "body.1"]
    assert not m.backbone.body[0].weight.requires_grad and m.backbone.body[3].weight.requires_grad
    m.train()
    assert not m.backbone.body[1].training and m.backbone.body[4].training and m.heads.training
    m.freeze(0, batchnorm=True)  # every BatchNorm on its statistics; weights still train
    m.train()
    assert not m.backbone.body[4].training and m.backbone.body[3].training
    x = torch.randn(4, 3, 32, 32)
    before = m.backbone.body[4].running_mean.clone()
    m(x)
    assert torch.equal(m.backbone.body[4].running_mean, before)
    with pytest.raises(ValueError, match="at most 1"):
        create_model("test_tiny").freeze(2)
    with pytest.raises(ValueError, match="layer groups"):
        create_model("lite_ensemble", pretrained=False).freeze(1)


def test_image_cache_decodes_only_the_images_training_uses(colour_folder, tmp_path, monkeypatch):
    import vestis.train.finetune as finetune

    for split, n in (("train", 2), ("validation", 1)):  # a class --min-per-class drops
        for i in range(n):
            make_image(colour_folder / split / "grey" / f"grey{i}.png", (128, 128, 128), seed=i)
    decoded = []
    build = finetune.build_image_cache
    monkeypatch.setattr(
        finetune, "build_image_cache", lambda paths, *a: decoded.extend(paths) or build(paths, *a)
    )
    train(ft_cfg(colour_folder, tmp_path, epochs=1, image_cache=True, min_per_class=5))
    assert len(decoded) == 30 + 12 and not [p for p in decoded if "grey" in str(p)]
