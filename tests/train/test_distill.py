"""Fine-tuning from a trained start (--init) and with trained teachers (--teacher, knowledge distillation)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import COLOURS, make_image, stable_seed
from tests.train.test_finetune import ft_cfg
from vestis.cli import main
from vestis.models.checkpoint import load_checkpoint
from vestis.models.preprocess import Preprocess
from vestis.models.registry import create_model
from vestis.train import TrainConfig, train
from vestis.train.distill import Teacher, distill_loss


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    """A test_tiny model fine-tuned on red / green / blue images (it reads them right)."""
    from tests.conftest import make_colour_folder

    tmp = tmp_path_factory.mktemp("teacher")
    data = make_colour_folder(tmp / "colours")
    summary = train(ft_cfg(data, tmp, head_init="random", epochs=6, out=str(tmp / "teacher")))
    assert summary["metrics"]["validation"]["label"]["top1"] == 1.0
    return tmp / "teacher"


def shuffled_folder(root: Path) -> Path:
    """The colour folder with uninformative training labels (each class folder holds every colour about
    equally), and right validation labels."""
    names = list(COLOURS)
    for split, k in (("train", 12), ("validation", 4)):
        for c, rgb in COLOURS.items():
            for i in range(k):
                label = names[(names.index(c) + i) % 3] if split == "train" else c
                make_image(root / split / label / f"{c}{i}.png", rgb, seed=stable_seed(split, c, i))
    return root


def test_distill_loss_is_the_tempered_kl():
    torch.manual_seed(0)
    logits, t = torch.randn(5, 4), 2.0
    target = torch.randn(5, 4).softmax(-1)
    expected = F.kl_div(F.log_softmax(logits / t, -1), target, reduction="batchmean") * t * t
    assert torch.allclose(distill_loss(logits, target, t), expected, atol=1e-6)
    assert distill_loss(target.log() * t, target, t).abs() < 1e-6  # the student already answers as taught


def test_teacher_input_follows_its_normalisation_and_size():
    teacher = Teacher.__new__(Teacher)
    teacher.student_pre = Preprocess(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    teacher.fmt = torch.preserve_format
    pixels = torch.rand(2, 3, 32, 32)
    x = (pixels - 0.5) / 0.5
    other = Preprocess(input_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    mean, std = torch.tensor(other.mean).view(1, 3, 1, 1), torch.tensor(other.std).view(1, 3, 1, 1)
    assert torch.allclose(teacher._input(x, other), (pixels - mean) / std, atol=1e-5)
    assert teacher._input(x, teacher.student_pre) is not None
    assert torch.equal(teacher._input(x, teacher.student_pre), x)
    assert teacher._input(x, Preprocess(input_size=40, mean=(0.5,) * 3, std=(0.5,) * 3)).shape[-1] == 40


def test_a_student_learns_the_teachers_answers_not_its_labels(teacher_run, tmp_path):
    """Training labels that carry nothing: alone the network cannot learn the colours; taught, it does."""
    data = shuffled_folder(tmp_path / "shuffled")
    alone = train(ft_cfg(data, tmp_path, head_init="random", epochs=6, out=str(tmp_path / "alone")))
    common = ["--backbone", "test_tiny", "--mode", "finetune", "--epochs", "6", "--quiet", "--workers", "0"]
    common += ["--precision", "fp32", "--batch-size", "8", "--augment", "light", "--lr", "0.03"]
    common += ["--head-init", "random", "--no-tensorboard", "--cache-dir", str(tmp_path / "cache")]
    args = ["--teacher", str(teacher_run), "--teacher", str(teacher_run), "--distill", "1"]
    assert main(["train", str(data), "--out", str(tmp_path / "taught"), *common, *args]) == 0
    taught, config = load_checkpoint(tmp_path / "taught")
    top1 = config["metrics"]["validation"]["label"]["top1"]
    assert alone["metrics"]["validation"]["label"]["top1"] < 0.75  # (chance: 1/3)
    assert top1 >= 0.9
    stored = config["train_config"]["finetune"]
    assert stored["teacher"] == [str(teacher_run)] * 2 and stored["distill"] == 1.0
    teacher_data = load_checkpoint(teacher_run)[1]["data"]
    record = config["train_config"]["lineage"]  # what the teachers learned from, kept if they are deleted
    assert (
        record["init"] is None
        and [t["data"]["fingerprint"] for t in record["teachers"]] == [teacher_data["fingerprint"]] * 2
    )


def test_teacher_classes_are_mapped_onto_the_students(teacher_run, tmp_path):
    model, _ = load_checkpoint(teacher_run)
    teacher = Teacher([str(teacher_run)], model, torch.device("cpu"), "fp32", 1.0, torch.preserve_format)
    assert teacher.map_classes({"label": ["red", "blue"], "other": ["a", "b"]}) == ["other"]
    x = torch.stack([torch.full((3, 32, 32), v) for v in (-1.0, 1.0)])
    soft = teacher.targets(x)["label"]
    full = model(x)["label"].softmax(-1)  # the teacher's own classes: blue, green, red
    expected = full[:, [2, 0]] / full[:, [2, 0]].sum(-1, keepdim=True)
    assert torch.allclose(soft, expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"lacks the classes \['purple'\]"):
        teacher.map_classes({"label": ["red", "purple"]})


def test_init_starts_from_a_trained_model(teacher_run, tmp_path, colour_folder):
    kept = train(
        ft_cfg(colour_folder, tmp_path, init=str(teacher_run), epochs=1, lr=1e-9, out=str(tmp_path / "a"))
    )
    assert kept["metrics"]["validation"]["label"]["top1"] == 1.0  # the heads were kept, not fitted again
    start, start_config = load_checkpoint(teacher_run)
    more = shutil.copytree(colour_folder, tmp_path / "more")
    for split, k in (("train", 10), ("validation", 4)):
        for i in range(k):
            make_image(more / split / "yellow" / f"y{i}.png", (220, 220, 30), seed=stable_seed("y", split, i))
    cfg = ft_cfg(
        more, tmp_path, init=str(teacher_run), epochs=1, backbone_lr_scale=0.0, out=str(tmp_path / "b")
    )
    train(cfg)
    grown, config = load_checkpoint(tmp_path / "b")
    assert grown.classes["label"] == ["blue", "green", "red", "yellow"]  # a new head for the new classes
    assert config["backbone"] == "test_tiny" and config["train_config"]["finetune"]["init"] == str(
        teacher_run
    )
    assert config["train_config"]["lineage"]["init"]["data"] == {
        k: start_config["data"][k] for k in ("source", "fingerprint", "counts")
    }
    for (k, a), b in zip(
        grown.backbone.state_dict().items(), start.backbone.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k  # the backbone began as the run's (its learning rate was 0)


def test_init_and_teacher_errors(teacher_run, tmp_path, colour_folder):
    with pytest.raises(ValueError, match="is a test_tiny model; --backbone lite1 differs"):
        train(ft_cfg(colour_folder, tmp_path, init=str(teacher_run), backbone="lite1"))
    with pytest.raises(ValueError, match="need mode finetune"):
        TrainConfig(data="x", teacher=[str(teacher_run)])
    with pytest.raises(ValueError, match=r"distill in \[0, 1\]"):
        TrainConfig(data="x", mode="finetune", teacher="default", distill=1.5)
    with pytest.raises(ValueError, match="would teach nothing"):
        TrainConfig(data="x", mode="finetune", teacher="default", distill=0)
    with pytest.raises(ValueError, match="an exported ONNX model"):
        train(ft_cfg(colour_folder, tmp_path, teacher=[str(tmp_path / "model.onnx")]))
    missing = tmp_path / "nowhere"
    with pytest.raises(Exception, match="nowhere"):
        train(ft_cfg(colour_folder, tmp_path, teacher=[str(missing)]))


def test_a_taught_run_resumes_as_if_uninterrupted(teacher_run, tmp_path, colour_folder):
    from tests.train.test_resume import assert_same_tensors, interrupt_at
    from vestis.train.finetune import train_finetune
    from vestis.train.resume import read_state

    kw = dict(init=str(teacher_run), teacher=[str(teacher_run)], distill=0.7, augment="trivial", mixup=0.2)
    a, b = tmp_path / "a", tmp_path / "b"
    train(ft_cfg(colour_folder, tmp_path, out=str(a), epochs=2, patience=0, **kw))
    with pytest.raises(KeyboardInterrupt):
        train_finetune(
            ft_cfg(colour_folder, tmp_path, out=str(b), epochs=2, patience=0, **kw), interrupt_at(2, 1)
        )
    train(TrainConfig(data=str(colour_folder), mode="finetune", resume=str(b), workers=0, quiet=True))
    sa, sb = read_state(a), read_state(b)
    for name in ("model", "ema"):  # the last epoch's weights (the teachers taught the resumed epoch too)
        assert_same_tensors(
            a / "last" / sa["files"] / f"{name}.safetensors", b / "last" / sb["files"] / f"{name}.safetensors"
        )


def test_init_drops_the_heads_the_data_has_not(teacher_run, tmp_path, colour_folder):
    """A two-head model (a head the data lacks first) as the start: the run keeps 'label' alone and its
    checkpoint loads (head keys as a one-head model has them)."""
    from vestis.models.checkpoint import save_checkpoint

    model, config = load_checkpoint(teacher_run)
    two = create_model("test_tiny", heads={"extra": ["a", "b"], **model.classes})
    two.head("label").load_state_dict(model.head("label").state_dict())
    two.backbone.load_state_dict(model.backbone.state_dict())
    start = save_checkpoint(tmp_path / "two", two, include_backbone=True, data=config["data"])
    summary = train(
        ft_cfg(colour_folder, tmp_path, init=str(start), epochs=1, lr=1e-9, out=str(tmp_path / "c"))
    )
    assert summary["metrics"]["validation"]["label"]["top1"] == 1.0  # the kept head, as trained
    loaded, _ = load_checkpoint(tmp_path / "c")
    assert loaded.classes == {"label": ["blue", "green", "red"]}
