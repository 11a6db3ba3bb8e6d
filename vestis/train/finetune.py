"""Fine-tuning (``vestis train --mode finetune``): the whole network trained end to end.

The recipe (:mod:`vestis.train.recipe`), every part a :class:`TrainConfig` field: the head starts from a linear
probe on frozen features (:mod:`vestis.train.probe`, LP-FT), AdamW with the backbone at a fraction of the head's
learning rate, linear warm-up then cosine decay, label smoothing, random-resized crop + flip + TrivialAugment,
optional mixup/cutmix, class-weighted or focal loss or a class-balanced sampler, weight EMA, the best epoch on
validation kept (early stopping) and flip test-time augmentation. bf16 autocast and channels_last;
DistributedDataParallel under torchrun (:mod:`vestis.train.distributed`).

Staged classes (``--stages top:20,rest``, :mod:`vestis.train.stages`): train on the 20 most frequent classes,
then grow the head to every class (keeping the learned rows) and go on with the rest; both groups are reported.

A run may start from a trained model (``--init``) and learn from trained teachers beside its labels
(``--teacher``, knowledge distillation: :mod:`vestis.train.distill`). The final report: :mod:`vestis.train.finish`.

After every epoch a resumable state goes to ``RUN/last/`` (:mod:`vestis.train.resume`). The best model so far
is the run's own checkpoint (``RUN/model.safetensors`` + ``config.json``), so the run can be evaluated while
it trains."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vestis.data import load_dataset
from vestis.engine.loader import default_workers
from vestis.evaluate import summarize
from vestis.models.heads import HeadConfig
from vestis.models.registry import create_model
from vestis.runtime import autocast, out_of_memory, resolve_precision, tune_allocator
from vestis.train import distributed
from vestis.train.config import TrainConfig
from vestis.train.distill import Teacher, distill_loss, init_model
from vestis.train.ema import EMA
from vestis.train.finish import finish, group_report
from vestis.train.history import History, score_heads
from vestis.train.losses import make_loss
from vestis.train.probe import probe_heads
from vestis.train.recipe import (
    head_loss,
    lr_scale,
    make_optimizer,
    mix_batch,
    resolve_augment,
    seed_everything,
)
from vestis.train.records import set_preprocess
from vestis.train.resume import (
    load_best,
    load_weights,
    out_of_memory_advice,
    read_state,
    restore_fit,
    resumed_config,
    save_state,
    set_rng_state,
    shape_heads,
    state_tensors,
)
from vestis.train.run import Fit, Run, predict_probs
from vestis.train.sampler import EpochSampler, build_image_cache, make_loader
from vestis.train.stages import plan_stages, stage_split, targets

__all__ = ["train_finetune"]


def train_finetune(cfg: TrainConfig, on_step=None) -> dict:
    """Fine-tune and save into ``cfg.out`` (or continue ``cfg.resume``); returns the run summary.

    ``on_step(epoch, step_in_epoch)``, if given, is called after every optimizer step (tests use it to
    interrupt a run)."""
    rank, world, device = distributed.init_distributed(cfg.device)
    try:
        return _train(cfg, rank, world, device, on_step)
    except KeyboardInterrupt:
        if rank == 0:
            print(
                f"interrupted; continue with: vestis train ... --mode finetune --resume {cfg.resume or cfg.out}"
            )
        raise
    except (MemoryError, RuntimeError) as e:
        if not out_of_memory(e):
            raise
        raise RuntimeError(out_of_memory_advice(cfg, e)) from e
    finally:
        distributed.close_distributed(world)


def _train(cfg: TrainConfig, rank: int, world: int, device, on_step) -> dict:
    t0 = time.time()
    tune_allocator()
    state = None
    if cfg.resume:
        state = read_state(Path(cfg.resume))
        cfg = resumed_config(cfg, state["config"])
        set_rng_state(state["rng"])
    ds = load_dataset(**cfg.dataset_args())
    notes: list[str] = []
    stages = plan_stages(ds, cfg, notes)
    seed_everything(cfg, 0, 0)  # the same random initial weights (--no-pretrained) in every process
    if cfg.init:
        model, cfg = init_model(cfg, ds.heads)
    else:
        head_cfg = HeadConfig("mlp" if cfg.head == "mlp" else "linear", cfg.hidden, cfg.dropout)
        model = create_model(cfg.backbone, pretrained=cfg.pretrained, head=head_cfg)
    note = set_preprocess(model, cfg, ds)
    if note:
        notes.append(note)
    cfg, note = resolve_augment(cfg, ds.heads)
    if note:
        notes.append(note)
    workers = default_workers() if cfg.workers is None else cfg.workers
    precision = resolve_precision(device, cfg.precision, training=True)
    run = Run(cfg, rank, world, device, precision, workers, ds, stages, model, notes, t0=t0, on_step=on_step)
    if cfg.teacher:  # the teachers only infer: in inference's precision (bf16 where that is faster)
        run.teacher = Teacher(
            cfg.teacher, model, device, run.eval_precision, cfg.distill_temperature, run.fmt
        )
    if state:
        run.bad, run.stage_results = dict(state["bad"]), list(state["stage_results"])
        run.epoch = state["epoch"]
        run.say(f"resuming {cfg.out} after epoch {state['epoch']}")
    frozen = run.model.freeze(cfg.freeze, cfg.freeze_bn)
    if frozen:
        run.say(f"frozen: {cfg.freeze} backbone layer group(s), {len(frozen)} modules")
    for note in ds.notes:
        run.say("data:", note)
    for note in notes:
        run.say("note:", note)
    if cfg.image_cache:
        used = [
            stage_split(ds, "train", st.train) + stage_split(ds, "validation", st.classes) for st in stages
        ]
        idx = sorted(set().union(*used))  # not the classes no stage trains on (--min-per-class, rare 'drop')
        paths = [ds.samples[i].path for i in idx]
        built = build_image_cache(paths, model.preprocess.resize_size, workers, run.main and not cfg.quiet)
        run.cache = [None] * len(ds.samples)
        for i, x in zip(idx, built, strict=True):
            run.cache[i] = x
    if run.main:
        run.history = History(run.run_dir, run.epoch, cfg.tensorboard)

    for si in range(state["stage"] if state else 0, len(stages)):
        restore = state if state is not None and state["stage"] == si else None
        if not restore or not restore["stage_done"]:
            fit = _start_stage(run, si, restore)
            stop = False
            while fit.stage_epoch < cfg.epochs and not stop:
                stop = _epoch(run, fit)
            if stop:
                run.say(f"early stop: no better validation {cfg.select} for {cfg.patience} epochs")
        if si < len(stages) - 1 and run.main:  # a stage before the last: its best model, per class group
            run.stage_results.append(group_report(run, si))
    summary = {"out": str(run.run_dir), "metrics": {}, "notes": notes, "skipped": 0, "epochs_run": run.epoch}
    if run.main:
        summary = finish(run)
        run.history.close()
    return summary


def _start_stage(run: Run, si: int, restore: dict | None) -> Fit:
    """The model for stage ``si`` (probed, grown from the last stage's best, or as saved), and its optimizer."""
    cfg, model, st, heads = run.cfg, run.model, run.stages[si], run.ds.heads
    tr, va = stage_split(run.ds, "train", st.train), stage_split(run.ds, "validation", st.classes)
    ytr, yva = targets(run.ds, st.classes, tr), targets(run.ds, st.classes, va)
    seed_everything(cfg, 10_000 + si, 0)  # head init: the same numbers in every process and on resume
    if restore:
        shape_heads(model, restore["classes"])
        load_weights(model, state_tensors(run.run_dir, restore, "model"))
    elif si == 0 and cfg.init and all(model.classes.get(h) == cl for h, cl in st.classes.items()):
        run.say(f"init: {cfg.init}'s heads have the data's classes; kept")
    elif si == 0 and cfg.head_init == "probe" and model.head_cfg.type == "linear":
        if run.main:
            errs = probe_heads(model, run.ds, tr, va, st.classes, cfg, run.device, run.say)
            run.bad.update({str(run.ds.samples[i].path): e for i, e in errs.items()})
        else:
            shape_heads(model, st.classes)  # DDP copies rank 0's probed heads over these
    elif si == 0:
        shape_heads(model, st.classes)
    else:
        load_best(model, run.run_dir)
        seed_everything(cfg, 10_000 + si, 0)  # the new rows' initial weights
        for h, cl in st.classes.items():
            model.grow_head(h, cl)
    if run.teacher is not None:
        untaught = run.teacher.map_classes(st.classes)
        if untaught:
            run.say(f"distill: no teacher has head(s) {untaught}; trained on their labels alone")
    model.to(run.device, memory_format=run.fmt)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 and run.main else None
    net = model
    if run.world > 1:
        ids = [run.device.index] if run.device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        net = torch.compile(net)
    opt = make_optimizer(model, cfg)
    sampler = EpochSampler(ytr[heads[0]], cfg.sampler == "balanced", cfg.seed, run.rank, run.world)
    drop_last, pin = len(sampler) > cfg.batch_size, run.device.type == "cuda"
    loader = make_loader(run.images(tr, train=True), cfg.batch_size, run.workers, sampler, drop_last, pin)
    losses = {
        h: make_loss(cfg.loss, ytr[h][ytr[h] >= 0], len(st.classes[h]), cfg.label_smoothing).to(run.device)
        for h in heads
    }
    steps = len(loader)
    total, warmup = cfg.epochs * steps, round(cfg.warmup_epochs * steps)
    fit = Fit(st, si, tr, va, ytr, yva, net, opt, ema, sampler, loader, run.images(va), losses, total, warmup)
    if restore:
        restore_fit(run, fit, restore)
    run.say(
        f"stage {st.name}: {len(tr)} training images, {len(va)} validation images, {len(st.classes[heads[0]])} "
        f"classes, {steps} steps per epoch on {run.world} process(es), {run.device}, training {run.precision}, "
        f"validation {run.eval_precision}"
    )
    return fit


def _epoch(run: Run, fit: Fit) -> bool:
    """One epoch, then (rank 0) validation, the best checkpoint, logs and the resume state. Returns: stop."""
    run.epoch += 1
    fit.stage_epoch += 1
    seed_everything(run.cfg, run.epoch, run.rank)
    fit.sampler.set_epoch(run.epoch)
    t = time.time()
    loss_sum, n_img, fails = _train_epoch(run, fit)
    seconds = time.time() - t
    loss_sum, n_img = distributed.all_sum([loss_sum, n_img], run.device, run.world)
    # images that failed in any process
    fails = distributed.union_failures(fails, fit.tr, run.device, run.world)
    run.bad.update({str(run.ds.samples[i].path): e for i, e in fails.items()})
    stop = False
    if run.main:
        stop = _validate_and_save(run, fit, loss_sum / max(n_img, 1), n_img, len(fails), seconds)
    return bool(distributed.broadcast_flags([int(stop)], run.device, run.world)[0])


def _train_epoch(run: Run, fit: Fit) -> tuple[float, int, dict]:
    cfg, heads, pre = run.cfg, run.ds.heads, run.model.preprocess
    fit.net.train()
    loss_sum, n_img, fails = 0.0, 0, {}
    desc = f"epoch {run.epoch} ({fit.stage.name} {fit.stage_epoch}/{cfg.epochs})"
    hide = not run.main or cfg.quiet
    bar = tqdm(total=len(fit.train_loader), desc=desc, unit="batch", disable=hide, leave=False)
    for k, (idx, xs, errs) in enumerate(fit.train_loader):
        fails.update({fit.tr[j]: e for j, e in errs})
        if xs is None and run.world == 1:
            continue
        scale = lr_scale(fit.step, fit.total, fit.warmup, cfg.min_lr_scale)
        for g in fit.opt.param_groups:
            g["lr"] = g["base_lr"] * scale
        dummy = xs is None  # every image of this batch failed; the other processes still need a step
        x = torch.zeros(1, 3, pre.input_size, pre.input_size) if dummy else xs[:, 0]
        x = x.to(run.device, non_blocking=True, memory_format=run.fmt)
        x, perm, lam = (x, None, 1.0) if dummy else mix_batch(x, cfg.mixup, cfg.cutmix)
        soft = run.teacher.targets(x) if run.teacher is not None and not dummy else {}
        with autocast(run.device, run.precision):
            out = fit.net(x)
        if dummy:
            loss = sum(z.float().sum() for z in out.values()) * 0.0
        else:
            ys = {h: torch.from_numpy(fit.ytr[h][idx]).to(run.device) for h in heads}
            weights = cfg.loss_weights or {}
            loss = 0.0
            for h in heads:
                part = head_loss(fit.losses[h], out[h].float(), ys[h], perm, lam)
                if h in soft:
                    taught = distill_loss(out[h], soft[h], cfg.distill_temperature)
                    part = (1 - cfg.distill) * part + cfg.distill * taught
                loss = loss + weights.get(h, 1.0) * part
        fit.opt.zero_grad(set_to_none=True)
        loss.backward()
        fit.opt.step()
        fit.step += 1
        if fit.ema is not None:
            fit.ema.update(run.model)
        if not dummy:
            loss_sum, n_img = loss_sum + loss.item() * len(idx), n_img + len(idx)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{cfg.lr * scale:.2e}")
        if run.on_step is not None:
            run.on_step(run.epoch, k + 1)
    bar.close()
    return loss_sum, n_img, fails


def _validate_and_save(
    run: Run, fit: Fit, train_loss: float, n_img: int, n_fails: int, seconds: float
) -> bool:
    """Score the epoch on validation, keep it if best, log it, write the resume state. Returns: stop early."""
    cfg, st = run.cfg, fit.stage
    eval_model = fit.ema.module if fit.ema is not None else run.model
    probs, ok, errs = predict_probs(eval_model, fit.val_images, run)
    run.bad.update({str(run.ds.samples[fit.va[j]].path): e for j, e in errs.items()})
    val = score_heads(probs, ok, fit.yva, st.classes, cfg.select, cfg.select_head)
    score = val["mean"]["score"] if val["mean"] else float(fit.stage_epoch)  # no validation data: the last
    improved = score > fit.best
    if improved:
        fit.best, fit.best_epoch, fit.since = score, run.epoch, 0
        metrics = {
            "validation": {h: summarize(m) for h, m in val["heads"].items()},
            "best_epoch": run.epoch,
            "stage": st.name,
        }
        run.save(eval_model, metrics)
    else:
        fit.since += 1
    stop = bool(cfg.patience) and fit.since >= cfg.patience
    stage_done = stop or fit.stage_epoch >= cfg.epochs
    mean = val["mean"] or {}
    row = {
        "epoch": run.epoch,
        "stage": fit.si,
        "stage_epoch": fit.stage_epoch,
        "train_loss": train_loss,
        "val_loss": mean.get("log_loss"),
        "val_top1": mean.get("top1"),
        "val_macro_f1": mean.get("macro_f1"),
        "lr": fit.opt.param_groups[-1]["lr"],
        "lr_backbone": fit.opt.param_groups[0]["lr"],
        "seconds": round(seconds, 2),
        "images_per_s": round(n_img / max(seconds, 1e-9), 1),
        "unreadable": n_fails,
        "best": improved,
    }
    run.history.log(row)
    if seconds > 5 or stage_done:  # (drawing takes a fraction of a second)
        run.history.plot()
    scores = "no validation data  "
    if val["mean"]:
        scores = (
            f"val loss {row['val_loss']:.4f} top1 {row['val_top1']:.4f} macro-F1 {row['val_macro_f1']:.4f}  "
        )
    run.say(
        f"epoch {run.epoch:>3} {st.name} {fit.stage_epoch}/{cfg.epochs}  train loss {train_loss:.4f}  {scores}"
        f"lr {row['lr']:.2e}  {seconds:.0f}s {row['images_per_s']:.0f} img/s" + ("  *" if improved else "")
    )
    save_state(run, fit, stage_done)
    return stop
