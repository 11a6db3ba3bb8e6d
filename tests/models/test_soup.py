"""Model soups: weights averaged exactly, members checked, the soup scored on validation and loadable."""

from __future__ import annotations

import json
import os

import pytest
import torch

import vestis
from tests.conftest import make_colour_folder
from vestis.cli import main
from vestis.models.checkpoint import load_checkpoint
from vestis.models.soup import average_models
from vestis.train import TrainConfig, train


def _finetune(data, out, seed, **kw):
    cfg = dict(
        data=str(data),
        out=str(out),
        mode="finetune",
        backbone="test_tiny",
        epochs=1,
        quiet=True,
        workers=0,
        cache_dir=str(out.parent / "cache"),
        precision="fp32",
        batch_size=8,
        augment="light",
        lr=0.03,
        tensorboard=False,
        seed=seed,
    )
    train(TrainConfig(**{**cfg, **kw}))
    return out


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    return make_colour_folder(tmp_path_factory.mktemp("colours") / "colours")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, colours):
    root = tmp_path_factory.mktemp("soup")
    return [_finetune(colours, root / f"ft{s}", s) for s in (0, 1)]


def test_weights_are_the_members_mean(two_runs):
    a, b = (load_checkpoint(r)[0].state_dict() for r in two_runs)
    soup, config = average_models(two_runs)
    state = soup.state_dict()
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])]
    assert moved  # the two seeds trained apart
    for k in moved:
        assert torch.allclose(state[k], (a[k] + b[k]) / 2, atol=1e-6), k
    first, _ = average_models(two_runs, weights=[1.0, 0.0])
    assert all(torch.allclose(first.state_dict()[k], a[k]) for k in moved)
    assert config["heads"] == load_checkpoint(two_runs[0])[1]["heads"]


def test_members_must_be_the_same_fine_tuned_network(two_runs, colours, tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        average_models([])
    with pytest.raises(ValueError, match="weights"):
        average_models(two_runs, weights=[1.0])
    fast = tmp_path / "fast"
    train(
        TrainConfig(
            data=str(colours),
            out=str(fast),
            backbone="test_tiny",
            quiet=True,
            workers=0,
            cache_dir=str(tmp_path / "c"),
            head="linear",
        )
    )
    with pytest.raises(ValueError, match=f"{fast}: stores only its heads"):
        average_models([two_runs[0], fast])
    config = json.loads((two_runs[1] / "config.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes((two_runs[1] / "model.safetensors").read_bytes())
    config["preprocess"]["input_size"] = 24
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"{other}: differs .* in preprocess"):
        average_models([two_runs[0], other])
    with pytest.raises(ValueError, match=f"{other}: differs .* in preprocess"):  # before any scoring
        vestis.soup([*two_runs, other], out=tmp_path / "greedy", greedy=True)
    assert not (tmp_path / "greedy").exists()


def test_cli_scores_the_soup_on_validation_and_it_loads(two_runs, colours, tmp_path, capsys):
    out = tmp_path / "soup"
    assert main(["soup", *map(str, two_runs), "--out", str(out), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for r in two_runs:  # members scored now, as the soup is: not the figures their trainers stored
        measured = vestis.load(r, runtime="torch").evaluate(split="validation", out=tmp_path / "e")
        assert figures[str(r)]["label"] == pytest.approx(measured["heads"]["label"]["top1"])
    assert set(figures) == {str(two_runs[0]), str(two_runs[1]), f"soup ({out})"}
    top1 = figures[f"soup ({out})"]["label"]
    assert 0 <= top1 <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["metrics"]["validation"]["label"]["top1"] == top1
    assert config["train_config"]["soup"]["members"] == [str(r.resolve()) for r in two_runs]
    model = vestis.load(out, runtime="torch")
    report = model.evaluate(split="validation")  # re-splits its data as the members did
    assert report["heads"]["label"]["top1"] == pytest.approx(top1)
    rows = model.predict(str(colours / "test" / "red"), top_k=1)
    assert len(rows) == 4 and all(
        r["predictions"]["label"][0]["label"] in ("blue", "green", "red") for r in rows
    )


def test_the_soup_table_does_not_read_members_stored_figures(two_runs, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    config = json.loads((two_runs[0] / "config.json").read_text())
    config["metrics"]["validation"]["label"]["top1"] = 0.123  # a stale figure (another precision, say)
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "model.safetensors").write_bytes((two_runs[0] / "model.safetensors").read_bytes())
    assert main(["soup", str(copy), str(two_runs[1]), "--out", str(tmp_path / "soup"), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures[str(copy)]["label"] != pytest.approx(0.123)


def test_a_soup_of_members_whose_data_is_gone_still_points_at_it(two_runs, tmp_path):
    from vestis.models.run_config import read_config
    from vestis.models.soup import save_soup

    moved = []
    for r in two_runs:  # copies whose recorded (run-relative) data path no longer exists from their place
        d = tmp_path / "elsewhere" / r.name
        d.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            (d / name).write_bytes((r / name).read_bytes())
        moved.append(d)
    out = save_soup(moved, tmp_path / "soup")
    stored = json.loads((moved[0] / "config.json").read_text())["data"]["load"]["source"]
    expected = os.path.abspath(moved[0] / stored)
    assert read_config(out)["data"]["load"]["source"] == expected


def test_a_soup_keeps_what_each_member_was_trained_on(two_runs, tmp_path):
    from vestis.models.run_config import read_config
    from vestis.models.soup import save_soup

    inner = save_soup(two_runs, tmp_path / "inner")
    outer = read_config(save_soup([inner, two_runs[1]], tmp_path / "outer"))["train_config"]["soup"]
    data = [read_config(r)["data"] for r in two_runs]
    assert [m["data"]["fingerprint"] for m in outer["lineage"]] == [
        data[0]["fingerprint"],
        data[1]["fingerprint"],
    ]
    assert outer["lineage"][1]["data"]["counts"] == data[1]["counts"] and "soup" not in outer["lineage"][1]
    nested = outer["lineage"][0]["soup"]  # the inner soup's own members, kept if its directory is replaced
    assert nested["members"] == [str(r.resolve()) for r in two_runs] and len(nested["lineage"]) == 2


def _noisy_copy(run, out, scale=30.0, seed=0):
    """The same network as ``run`` (config copied) with its floating-point weights drowned in noise."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True)
    (out / "config.json").write_text((run / "config.json").read_text())
    gen = torch.Generator().manual_seed(seed)
    state = load_file(str(run / "model.safetensors"))
    for k, v in state.items():
        if v.is_floating_point() and v.numel() > 1:
            state[k] = v + scale * (v.float().std() + 1e-3) * torch.randn(v.shape, generator=gen).to(v.dtype)
    save_file(state, str(out / "model.safetensors"))
    return out


def test_greedy_soup_leaves_out_an_ingredient_that_lowers_validation(two_runs, tmp_path, capsys, monkeypatch):
    from vestis.evaluate.soup import mean_top1, validation_heads
    from vestis.models.soup import save_soup

    monkeypatch.setenv("VESTIS_CACHE", str(tmp_path / "vcache"))
    cached = lambda: sorted(p.name for p in (tmp_path / "vcache" / "features").iterdir())  # noqa: E731

    noisy = _noisy_copy(two_runs[0], tmp_path / "noisy")
    runs = [noisy, *two_runs]
    own = {str(r): mean_top1(validation_heads(r)) for r in runs}
    assert own[str(noisy)] < max(own.values())  # the noise did break it
    save_soup(runs, tmp_path / "uniform")
    uniform = mean_top1(validation_heads(tmp_path / "uniform"))

    before = cached()  # the ingredients' and the uniform soup's features
    out = tmp_path / "greedy"
    assert main(["soup", *map(str, runs), "--out", str(out), "--greedy", "--json"]) == 0
    assert cached() == before  # the throwaway candidates left nothing in the feature cache
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line) == {"ingredients", "steps", "kept", "soup", "selected_on"}
    assert line["ingredients"] == pytest.approx(own)
    assert list(line["ingredients"].values()) == sorted(own.values(), reverse=True)  # best first
    assert str(noisy.resolve()) not in line["kept"]
    assert [s["run"] for s in line["steps"] if not s["kept"]] == [str(noisy)]
    top1 = line["soup"]["label"]
    assert top1 >= max(own.values()) and top1 > uniform  # never below its best ingredient; the noise cost
    config = json.loads((out / "config.json").read_text())
    assert config["train_config"]["soup"]["members"] == line["kept"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the candidates' folder is gone
    assert config["metrics"]["validation"]["label"]["top1"] == top1
    one = vestis.soup([noisy, two_runs[0]], out=tmp_path / "one", greedy=True, fp16=True, runtime="torch")
    stored = one.evaluate(
        split="validation", out=tmp_path / "eval-one"
    )  # one member, kept in fp16: scored so
    assert one.metrics["validation"]["label"]["top1"] == pytest.approx(stored["heads"]["label"]["top1"])
    for run in (out, tmp_path / "one"):  # scored without writing evaluation reports
        assert sorted(p.name for p in run.iterdir()) == ["config.json", "model.safetensors"]


def test_soup_arguments_are_checked(two_runs, tmp_path):
    with pytest.raises(ValueError, match="at least two"):
        vestis.soup(two_runs[:1], out=tmp_path / "one")
    with pytest.raises(ValueError, match="greedy"):
        vestis.soup(two_runs, out=tmp_path / "both", weights=[1, 2], greedy=True)
