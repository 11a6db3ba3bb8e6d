"""The resumable state of a fine-tuning run, written after every epoch into ``RUN/last/``: ``state.json``
(epoch, optimizer hyper-parameters and step counts, EMA and sampler state, RNG states, best score, the stored
training options) and the tensors it names in ``RUN/last/epoch-NNNN/{model,ema,optimizer}.safetensors``.
``state.json`` is replaced atomically last, so it always names a complete set; nothing is pickled.

A resumed run is the same run: its options come from the state (:func:`resumed_config`), except the runtime
ones (workers, device, caches, ...), which are taken as given now."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vestis.models.checkpoint import atomic_write_text, read_config, read_weights
from vestis.train.config import RUNTIME_FIELDS, TrainConfig

STATE_FORMAT = 2  # 2: options grouped, without the runtime ones; data paths absolute
READS = (1, 2)  # 1: flat options, runtime ones included
PATH_FIELDS = ("data", "images")  # compared by location: a run may be resumed from another working directory


# ------------------------------------------------------------------------------------------------ RNG state
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state() -> dict:
    np_state, py = np.random.get_state(), random.getstate()
    return {
        "torch": _b64(torch.get_rng_state()),
        "cuda": [_b64(torch.cuda.get_rng_state())] if torch.cuda.is_initialized() else [],  # this GPU
        "numpy": [np_state[0], np_state[1].tolist(), *map(float, np_state[2:])],
        "python": [py[0], list(py[1]), py[2]],
    }


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(_unb64(s["torch"]))
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(_unb64(s["cuda"][0]))
    n = s["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), int(n[2]), int(n[3]), float(n[4])))
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))


# ------------------------------------------------------------------------------------------ optimizer state
def optimizer_state(opt) -> tuple[dict, dict]:
    """-> (tensors keyed 'PARAM_INDEX.NAME' for safetensors, JSON-able rest: param groups, scalar state)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for i, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{i}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{i}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(opt, tensors: dict, meta: dict) -> None:
    params = [p for g in opt.param_groups for p in g["params"]]
    state: dict[int, dict] = {}
    for key, v in [*tensors.items(), *meta["scalars"].items()]:
        i, k = key.split(".", 1)
        p = params[int(i)]
        if torch.is_tensor(v) and v.shape == p.shape:
            v = torch.empty_like(p).copy_(v)  # the parameter's device and memory format (channels_last)
        state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ------------------------------------------------------------------------------------------------- weights
def shape_heads(model, classes: dict[str, list[str]]) -> None:
    """Fresh heads where ``model``'s classes differ from ``classes``."""
    for h, cl in classes.items():
        if model.classes.get(h) != cl:
            model.add_head(h, cl)


def load_weights(model, tensors: dict) -> None:
    target = model.state_dict()
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in tensors.items()}, strict=True)


def load_best(model, run_dir: Path) -> None:
    """The best model saved so far (the run's checkpoint) into ``model``, heads reshaped to fit it."""
    shape_heads(model, read_config(run_dir)["heads"])
    load_weights(model, read_weights(run_dir))


# ------------------------------------------------------------------------------------------------ the state
def write_state(run_dir: Path, epoch: int, tensors: dict[str, dict], meta: dict) -> None:
    """Tensors into RUN/last/epoch-NNNN/*.safetensors, then ``state.json`` (the commit) names them."""
    last = run_dir / "last"
    sub = last / f"epoch-{epoch:04d}"
    sub.mkdir(parents=True, exist_ok=True)
    for name, ts in tensors.items():
        save_file(ts, str(sub / f"{name}.safetensors.tmp"))
        os.replace(sub / f"{name}.safetensors.tmp", sub / f"{name}.safetensors")
    atomic_write_text(last / "state.json", json.dumps({**meta, "files": sub.name}))
    for old in last.glob("epoch-*"):
        if old != sub:
            shutil.rmtree(old, ignore_errors=True)


def read_state(run_dir: Path) -> dict:
    path = Path(run_dir) / "last" / "state.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: nothing to resume (no last/state.json; was it a finetune run?)")
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: damaged resume state ({e})") from None
    if not isinstance(state, dict) or state.get("format") not in READS:
        fmt = state.get("format") if isinstance(state, dict) else None
        raise ValueError(f"{path}: unsupported resume state format {fmt!r} (this vestis reads {list(READS)})")
    return state


def state_tensors(run_dir: Path, state: dict, name: str) -> dict:
    f = Path(run_dir) / "last" / state["files"] / f"{name}.safetensors"
    return load_file(str(f)) if f.is_file() else {}


def state_config(cfg: TrainConfig) -> dict:
    """The options a resume state stores: grouped, no runtime ones, data paths absolute."""
    d = cfg.to_dict()
    for name in PATH_FIELDS:
        if d["dataset"][name]:
            d["dataset"][name] = os.path.abspath(d["dataset"][name])
    return d


def save_state(run, fit, stage_done: bool) -> None:
    """The resume state after ``run``'s current epoch of stage ``fit`` (see the trainer's Run and Fit)."""

    def cpu(sd):
        return {k: v.detach().cpu().contiguous() for k, v in sd.items()}

    opt_tensors, opt_meta = optimizer_state(fit.opt)
    tensors = {"model": cpu(run.model.state_dict()), "optimizer": opt_tensors}
    if fit.ema is not None:
        tensors["ema"] = cpu(fit.ema.module.state_dict())
    meta = {
        "format": STATE_FORMAT,
        "epoch": run.epoch,
        "stage": fit.si,
        "stage_epoch": fit.stage_epoch,
        "stage_done": stage_done,
        "finished": False,
        "step": fit.step,
        "classes": run.model.classes,
        "best": fit.best,
        "best_epoch": fit.best_epoch,
        "since_best": fit.since,
        "ema_updates": fit.ema.updates if fit.ema is not None else 0,
        "optimizer": opt_meta,
        "sampler": fit.sampler.state_dict(),
        "rng": rng_state(),
        "bad": sorted(run.bad.items()),
        "stage_results": run.stage_results,
        "config": state_config(run.cfg),
    }
    write_state(run.run_dir, run.epoch, tensors, meta)


def restore_fit(run, fit, state: dict) -> None:
    """Optimizer, EMA and counters of stage ``fit`` as the resume state saved them (the model is loaded by the
    caller, before the optimizer is made)."""
    load_optimizer_state(fit.opt, state_tensors(run.run_dir, state, "optimizer"), state["optimizer"])
    if fit.ema is not None:
        load_weights(fit.ema.module, state_tensors(run.run_dir, state, "ema"))
        fit.ema.updates = state["ema_updates"]
    fit.step, fit.stage_epoch, fit.since = state["step"], state["stage_epoch"], state["since_best"]
    fit.best, fit.best_epoch = state["best"], state["best_epoch"]


def mark_finished(run_dir: Path) -> None:
    path = Path(run_dir) / "last" / "state.json"
    if path.is_file():
        atomic_write_text(path, json.dumps({**json.loads(path.read_text()), "finished": True}))


def out_of_memory_advice(cfg: TrainConfig, exc: BaseException) -> str:
    """The one-line error for a run that ran out of memory: what failed, and how to go on from its last epoch."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"out of memory at batch size {cfg.batch_size} ({first}); the finished epochs are kept: continue with "
        f"--resume {cfg.resume or cfg.out} --workers 0 (fewer processes), or start again with a smaller --batch-size"
    )


def resumed_config(given: TrainConfig, stored: dict) -> TrainConfig:
    """The stored options (grouped, or flat from older states), with the runtime options (workers, quiet,
    device, ...) and the data paths as given now. Any other option given with a non-default value that differs
    from the stored one is an error, as is other data: a resumed run is the same run."""
    stored = TrainConfig.flatten(stored)
    default = TrainConfig(data=given.data, mode="finetune")
    merged, conflicts = {}, []
    for f in fields(TrainConfig):
        name, now = f.name, getattr(given, f.name)
        before = stored.get(name, getattr(default, name))
        if name in RUNTIME_FIELDS:
            merged[name] = now
        elif name in PATH_FIELDS:
            if now is not None and (before is None or Path(now).resolve() != Path(before).resolve()):
                conflicts.append(f"{name}: stored {before!r}, given {now!r}")
            merged[name] = before if now is None else now
        else:
            if now != before and now != getattr(default, name):
                conflicts.append(f"{name}: stored {before!r}, given {now!r}")
            merged[name] = before
    if conflicts:
        raise ValueError(
            "--resume continues a run with its own options; these differ: " + "; ".join(conflicts)
        )
    merged["out"] = given.resume
    return TrainConfig(**merged)
