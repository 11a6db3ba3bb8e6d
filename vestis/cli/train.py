"""`vestis train`: fast mode and fine-tuning options, parsed into a TrainConfig."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields


def _add_train(sub) -> None:
    from vestis.train.config import HEADS, LOSSES, MODES, TrainConfig

    p = sub.add_parser("train", help="train a classifier on an image folder or a catalogue CSV")
    p.add_argument(
        "data", help="image folder (root/{train,validation,test}/CLASS/* or root/CLASS/*) or catalogue .csv"
    )
    p.add_argument("--out", default="runs/train", help="run directory to write (default: runs/train)")
    p.add_argument(
        "--images", help="catalogue CSV: directory holding the images (default: images/ beside the CSV)"
    )
    p.add_argument(
        "--label",
        dest="labels",
        action="append",
        help="label column; several heads: a,b,c or repeat the option",
    )
    p.add_argument("--split", help="split rule for catalogues: year:even (even years train, odd years test)")
    p.add_argument(
        "--val", type=float, default=0.1, help="validation share when the data has no validation split"
    )
    p.add_argument("--test", type=float, default=0.1, help="test share when the data has no splits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--backbone", default=TrainConfig.backbone, help="registered backbone or timm name (`vestis models`)"
    )
    p.add_argument(
        "--no-pretrained", dest="pretrained", action="store_false", help="random initial backbone weights"
    )
    p.add_argument(
        "--mode", choices=MODES, default="fast", help="fast: frozen backbone + cached features (default)"
    )
    p.add_argument(
        "--head", choices=HEADS, default=TrainConfig.head, help="head type; auto chooses on validation"
    )
    p.add_argument("--hidden", type=int, default=TrainConfig.hidden, help="MLP head width")
    p.add_argument("--dropout", type=float, default=TrainConfig.dropout)
    p.add_argument(
        "--native-size",
        default=TrainConfig.native_size,
        help="small training images: auto (record their size when small; larger inputs are downscaled to it "
        "first), off, or WxH",
    )
    p.add_argument("--loss", choices=LOSSES, default="ce", help="ce, weighted (class-weighted ce) or focal")
    p.add_argument("--label-smoothing", type=float, default=TrainConfig.label_smoothing)
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument(
        "--weight-decay", type=float, nargs="+", help="candidate weight decays (chosen on validation)"
    )
    p.add_argument(
        "--select", choices=("top1", "macro_f1"), default="top1", help="validation metric for selection"
    )
    p.add_argument(
        "--no-tta", dest="tta", action="store_false", help="no flipped views (train and test time)"
    )
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--workers", type=int, help="image decoding processes (default: one per core, at most 4)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--no-cache", dest="cache", action="store_false", help="do not read or write the feature cache"
    )
    p.add_argument("--cache-dir", help="feature cache directory (default: $VESTIS_CACHE or ~/.cache/vestis)")
    p.add_argument(
        "--min-count",
        "--min-per-class",
        dest="min_per_class",
        type=int,
        default=1,
        help="classes with fewer training images are dropped or folded (--rare)",
    )
    p.add_argument(
        "--rare",
        choices=("drop", "fold"),
        default="drop",
        help="what --min-count does: drop the rare classes from the head, or fold them into one class 'other'",
    )
    p.add_argument(
        "--runtime",
        choices=("auto", "torch", "onnx"),
        default="auto",
        help="feature extraction runtime (auto: ONNX Runtime fp32 on a CPU, when installed)",
    )
    p.add_argument(
        "--input-size",
        type=int,
        help="the square the network sees (default: the backbone's); cost grows with its area",
    )
    p.add_argument(
        "--fit",
        choices=("crop", "pad"),
        default="crop",
        help="how images meet the square input: centre crop, or pad (letterbox: portrait products kept whole)",
    )
    p.add_argument(
        "--colour-stats",
        action="store_true",
        help="fast mode: colour statistics of the product pixels beside the CNN features (helps colour heads)",
    )
    p.add_argument(
        "--select-head", help="finetune: select epochs on this head's score (default: the mean over heads)"
    )
    p.add_argument(
        "--loss-weight",
        dest="loss_weights",
        action="append",
        type=_head_weight,
        metavar="HEAD=W",
        help="finetune: a head's loss weight (default 1; repeat for several heads)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    _add_finetune(p)
    p.set_defaults(func=_train, _config_fields={f.name for f in fields(TrainConfig)})


def _add_finetune(p) -> None:
    from vestis.train.config import AUGMENTS, HEAD_INITS, SAMPLERS, TrainConfig

    d = TrainConfig
    g = p.add_argument_group(
        "fine-tuning (--mode finetune; --epochs defaults to 15 per stage, --lr is the head's)"
    )
    g.add_argument(
        "--backbone-lr-scale", type=float, default=d.backbone_lr_scale, help="backbone lr = lr * this"
    )
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="linear warm-up, then cosine")
    g.add_argument("--min-lr-scale", type=float, default=d.min_lr_scale, help="cosine ends at lr * this")
    g.add_argument(
        "--augment",
        choices=AUGMENTS,
        default=d.augment,
        help="after random-resized-crop (+flip); auto: trivial, or colour-safe (no operation that changes colours) "
        "when a head is a colour",
    )
    g.add_argument(
        "--crop-scale", type=float, default=d.crop_scale, help="random-resized-crop: smallest area"
    )
    g.add_argument("--erase", type=float, default=d.erase, help="random-erasing probability")
    g.add_argument(
        "--zoom-out", type=float, default=d.zoom_out, help="probability of a looser framing (photo shrunk)"
    )
    g.add_argument("--low-res", type=float, default=d.low_res, help="probability of a low-resolution copy")
    g.add_argument(
        "--train-size", type=int, help="training crop size (default: the model's; faster when smaller)"
    )
    g.add_argument(
        "--freeze",
        type=int,
        default=d.freeze,
        help="backbone layer groups kept frozen (1: stem, 2: + first stage ...); saves their backward pass",
    )
    bn = g.add_mutually_exclusive_group()
    bn.add_argument(
        "--freeze-bn",
        dest="freeze_bn",
        action="store_true",
        default=None,
        help="backbone BatchNorms keep their pretrained statistics (default when pretrained)",
    )
    bn.add_argument(
        "--train-bn", dest="freeze_bn", action="store_false", help="BatchNorm statistics follow the data"
    )
    g.add_argument("--mixup", type=float, default=d.mixup, help="mixup alpha (0: off)")
    g.add_argument("--cutmix", type=float, default=d.cutmix, help="cutmix alpha (0: off)")
    g.add_argument(
        "--sampler", choices=SAMPLERS, default=d.sampler, help="balanced: classes drawn equally often"
    )
    g.add_argument("--ema-decay", type=float, default=d.ema_decay, help="weight EMA decay (0: off)")
    g.add_argument("--patience", type=int, default=d.patience, help="early stopping epochs (0: off)")
    g.add_argument("--head-init", choices=HEAD_INITS, default=d.head_init, help="probe: linear probe first")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--image-cache", action="store_true", help="decode and resize each image once, in memory")
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="no RUN/tb events")
    g.add_argument(
        "--stages",
        help="staged classes, e.g. top:20,rest (then: rest = the other classes only, all = every class)",
    )
    g.add_argument("--resume", metavar="RUN", help="continue an interrupted finetune run from RUN/last")
    g.add_argument(
        "--init",
        metavar="RUN",
        help="start from a trained model's weights (default: the bundled model, or a run)",
    )
    g.add_argument(
        "--teacher",
        metavar="RUN",
        action="append",
        help="distil a trained model's answers (default, or a run); repeat for an ensemble of teachers",
    )
    g.add_argument(
        "--distill", type=float, default=d.distill, help="the teachers' share of each head's loss (0..1)"
    )
    g.add_argument(
        "--distill-temperature",
        type=float,
        default=d.distill_temperature,
        help="softmax temperature of distillation",
    )


def _head_weight(text: str) -> tuple[str, float]:
    head, sep, value = text.partition("=")
    try:
        weight = float(value)
    except ValueError:
        weight = -1.0
    if not sep or not head.strip() or weight < 0:
        raise argparse.ArgumentTypeError(f"expected HEAD=WEIGHT with a weight >= 0, got {text!r}")
    return head.strip(), weight


def _train(args) -> int:
    from vestis.train import TrainConfig, train

    options = {k: v for k, v in vars(args).items() if k in args._config_fields}
    if options.get("loss_weights") is not None:
        options["loss_weights"] = dict(options["loss_weights"])
    cfg = TrainConfig.from_dict(options)
    summary = train(cfg)
    if cfg.quiet:
        print(json.dumps({"out": summary["out"], "validation": summary["metrics"].get("validation", {})}))
    return 0
