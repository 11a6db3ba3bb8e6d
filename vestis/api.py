"""The Python API: ``vestis.load``, ``vestis.train`` and :class:`Model`.

>>> import vestis
>>> model = vestis.load()                          # the bundled default; or a run directory, or an .onnx file
>>> model.predict(["a.jpg", "shop/", "https://example.com/x.jpg"], top_k=3)   # the --json contract, per image
>>> model.embed(["a.jpg", "b.jpg"])                # (N, D) float32, L2-normalised
>>> model.evaluate("data/clothes", split="test")   # the report dict `vestis evaluate` prints
>>> run = vestis.train("data/clothes", mode="finetune", epochs=15, out="runs/ft")   # -> Model

The command line and the benchmarks call this module; it is thin over the engine (``vestis.engine``).
Loading an ``.onnx`` file never imports torch."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vestis.engine.infer import run_batches
from vestis.engine.load import is_onnx, load_runner
from vestis.predict import PredictConfig, predict, predict_images, resolve_inputs


def _as_list(inputs) -> list:
    """One file/folder/glob/URL, or a list of them."""
    return [str(inputs)] if isinstance(inputs, (str, Path)) else list(inputs)


@dataclass
class Embedded:
    """Embeddings of the inputs that could be read, and why the others could not."""

    vectors: np.ndarray  # (N_ok, D) float32, L2-normalised
    inputs: list[str]  # the N_ok inputs, in order (folders and globs expanded)
    errors: dict[str, str] = field(default_factory=dict)  # input -> reason


class Model:
    """A trained model ready for inference, in one runtime (``model.runtime``: PyTorch or ONNX Runtime).

    Attributes: ``classes`` ({head: [class, ...]}), ``heads``, ``preprocess`` (the model's
    :class:`~vestis.models.preprocess.Preprocess`), ``card`` (the stored config: backbone, heads, metrics,
    data, training options; for an ONNX file, its metadata), ``source`` (what was loaded)."""

    def __init__(self, runner, card: dict, source=None, cache_dir=None):
        self.runner, self.card, self.source, self.cache_dir = runner, card, source, cache_dir

    def __repr__(self) -> str:
        heads = ", ".join(f"{h}: {len(c)} classes" for h, c in self.classes.items())
        return f"Model({self.source or 'bundled default'}, {self.card.get('backbone', '?')}, {heads}, {self.runtime})"

    @property
    def classes(self) -> dict[str, list[str]]:
        return dict(self.runner.classes)

    @property
    def heads(self) -> list[str]:
        return list(self.runner.classes)

    @property
    def preprocess(self):
        return self.runner.preprocess

    @property
    def runtime(self) -> str:
        return self.runner.name

    @property
    def embedding_dim(self) -> int:
        return int(self.runner.num_features)

    @property
    def metrics(self) -> dict:
        return dict(self.card.get("metrics") or {})

    @property
    def hierarchy(self) -> dict | None:
        """The label hierarchy learned from the training data (:func:`vestis.data.hierarchy.learn_hierarchy`,
        stored in the card as ``train_config.hierarchy``), or None."""
        return (self.card.get("train_config") or {}).get("hierarchy")

    def _table(self, consistent: bool) -> dict | None:
        if consistent and not self.hierarchy:
            name = self.source or "the bundled model"
            warnings.warn(
                f"{name} stores no label hierarchy: consistent decoding changes nothing", stacklevel=3
            )
        return self.hierarchy if consistent else None

    def predict_iter(
        self,
        inputs: str | list[str],
        top_k: int = 3,
        tta: bool = False,
        batch_size: int = 32,
        workers: int | None = None,
        progress: bool = False,
        timeout: float = 10.0,
        max_bytes: int = 20 * 2**20,
        consistent: bool = False,
    ) -> Iterator[dict]:
        """One result per image, in input order, as soon as it is ready: ``{"input", "predictions": {HEAD:
        [{"label", "score"}, ...]}}`` or ``{"input", "error"}`` (a bad input never stops the others).
        ``inputs``: files, folders (recursive), globs, http(s) URLs. ``consistent``: decode the heads of the
        model's label hierarchy jointly (:attr:`hierarchy`; the combinations seen in training only)."""
        if not self.runner.classes:
            raise ValueError(
                f"{self.source}: this model has no heads (a backbone export): it can embed, not predict"
            )
        cfg = PredictConfig(
            top_k=top_k,
            batch_size=batch_size,
            workers=workers,
            timeout=timeout,
            max_bytes=max_bytes,
            tta=tta,
            progress=progress,
            hierarchy=self._table(consistent),
        )
        return predict(self.runner, _as_list(inputs), cfg)

    def predict(self, inputs: str | list[str], top_k: int = 3, **options) -> list[dict]:
        """All of :meth:`predict_iter` as a list (the ``vestis predict --json`` lines)."""
        return list(self.predict_iter(inputs, top_k=top_k, **options))

    def predict_images(
        self, images: list, top_k: int = 3, tta: bool = False, consistent: bool = False
    ) -> list[dict]:
        """In memory (PIL images or encoded bytes): ``{"predictions": ...}`` or ``{"error": ...}`` each."""
        return predict_images(self.runner, images, top_k=top_k, tta=tta, hierarchy=self._table(consistent))

    def embed_items(
        self,
        inputs: str | list[str],
        tta: bool = False,
        batch_size: int = 32,
        workers: int | None = None,
        progress: bool = False,
    ) -> Embedded:
        """Embeddings (pooled features of the model's backbone, view-averaged, L2-normalised) of every readable
        input; the unreadable ones are listed in ``errors``, not raised."""
        resolved = resolve_inputs(_as_list(inputs))
        ok = [(name, src) for name, src, err in resolved if err is None]
        errors = {name: err for name, _, err in resolved if err is not None}
        vectors = np.zeros((len(ok), self.embedding_dim), np.float32)
        good = np.zeros(len(ok), bool)
        views = ("plain", "flip") if tta else ("plain",)
        for r in run_batches(self.runner, [s for _, s in ok], views, batch_size, workers, progress, "embed"):
            vectors[r.idx], good[r.idx] = r.embeddings, True
            errors.update({ok[j][0]: e for j, e in r.errors})
        return Embedded(vectors[good], [n for (n, _), g in zip(ok, good, strict=True) if g], errors)

    def embed(self, inputs: str | list[str], **options) -> np.ndarray:
        """(N, D) float32, L2-normalised, one row per input image. Raises ``ValueError`` naming the inputs that
        could not be read (use :meth:`embed_items` to skip them instead)."""
        got = self.embed_items(inputs, **options)
        if got.errors:
            shown = "; ".join(f"{k}: {v}" for k, v in list(got.errors.items())[:5])
            raise ValueError(f"{len(got.errors)} input(s) could not be embedded: {shown}")
        return got.vectors

    def evaluate(
        self,
        data: str | None = None,
        split: str = "test",
        images: str | None = None,
        out: str | Path | None = None,
        tta: bool | None = None,
        quiet: bool = True,
    ) -> dict:
        """Score the model on ``split`` of its own data (re-split as in training; 'test' is the split it never
        saw) or of ``data`` (other labelled data: a folder or a catalogue CSV with ``images``). Writes the
        report (``metrics.json``, ``report.md``, plots) to ``out`` and returns the dict ``vestis evaluate``
        prints."""
        from vestis.evaluate.runner import evaluate_runner

        run_dir = self._run_dir()
        if out is None:
            base = Path(self.source[0] if isinstance(self.source, list) else self.source) if run_dir else None
            out = base / f"eval-{split}" if base is not None and base.is_dir() else None
        return evaluate_runner(
            self.runner,
            self.card,
            split,
            data,
            images,
            out,
            tta,
            quiet,
            self.cache_dir,
            str(self.source or "the bundled model"),
            run_dir,
        )

    def _run_dir(self):
        from vestis.models.checkpoint import resolve_model_dir

        src = self.source[0] if isinstance(self.source, list) else self.source
        return None if is_onnx(src) else resolve_model_dir(src)

    def torch_model(self):
        """The PyTorch module behind this model (loaded from the run when the runtime is ONNX Runtime)."""
        model = getattr(self.runner, "model", None)
        if model is not None:
            return model
        if is_onnx(self.source):
            raise ValueError(f"{self.source} is an ONNX file: it has no PyTorch model to export or fine-tune")
        from vestis.models.ensemble import load_models

        return load_models(self.source if isinstance(self.source, list) else [self.source])[0]

    def explain(self, image, head: str | None = None, cls: str | int | None = None):
        """Grad-CAM of ``head`` (default: the first) for class ``cls`` (a name or index; default: the predicted
        one) on ``image`` (a path, encoded bytes, a PIL image or a uint8 (H, W, 3) array), on the backbone's
        last feature map. Returns an :class:`~vestis.engine.explain.Explanation`: ``heatmap`` (H, W) float32 in
        [0, 1] at the model's crop size, ``overlay`` (H, W, 3) uint8, ``crop``, ``head``, ``cls``, ``score``,
        ``predicted``. Runs in PyTorch (the run's weights) whatever this model's runtime; needs grad-cam
        (``pip install 'vestis[explain]'``)."""
        return self._explainer().images([image], head, cls)[0]

    def _explainer(self):
        if getattr(self, "_cam", None) is None:
            from vestis.engine.explain import Explainer

            self._cam = Explainer(self.torch_model())
        return self._cam

    def profile(self, input_size: int | None = None, speed: bool = True, seconds: float = 2.0) -> dict:
        """Parameters, MACs and FLOPs, receptive field per backbone stage, and (``speed``) measured eager fp32
        images/s at batch 1 and 32 on this CPU (``cpu``), as ``vestis profile RUN --json`` prints them."""
        from vestis.models.profile import profile_model
        from vestis.runtime import cpu_info

        prof = profile_model(
            self.torch_model(), str(self.source or "the bundled model"), input_size, speed, seconds
        )
        return {**prof.to_dict(), "cpu": cpu_info() if speed else None}

    def export(
        self,
        out: str | Path,
        format: str = "onnx",
        int8: bool = False,
        calibrate: int = 256,
        progress: bool = False,
    ) -> dict:
        """Export to ONNX (dynamic batch; heads, classes, preprocessing, embedding output and version in its
        metadata). Checks parity against PyTorch fp32 on the run's validation images (synthetic images if the
        data is not at hand). ``int8``: static QDQ quantisation calibrated on up to ``calibrate`` training
        images, with top-1 of fp32 vs int8 on the validation split measured and stored. Returns the report."""
        if format != "onnx":
            raise ValueError(f"unknown export format {format!r}; supported: onnx")
        from vestis.engine.export import export_onnx

        model = self.torch_model()
        train_paths, val = self._export_data(int8)
        if int8 and not train_paths:
            raise ValueError("int8 calibration needs the run's training images; they are not found from here")
        val_paths = val[0] if val else None
        return export_onnx(
            model,
            out,
            config=self.card,
            int8=int8,
            calibration=train_paths[:calibrate] if int8 else None,
            validation=val if int8 else None,
            parity=val_paths[:64] if val_paths else None,
            progress=progress,
        )

    def _export_data(self, need_train: bool):
        """(training image paths, (validation paths, {head: labels})) of the run's data, or ([], None)."""
        from vestis.evaluate.runner import evaluation_samples

        try:
            val, _, _ = evaluation_samples(self.card, "validation", run_dir=self._run_dir())
            train = evaluation_samples(self.card, "train", run_dir=self._run_dir())[0] if need_train else []
        except (ValueError, FileNotFoundError):
            return [], None
        rng = np.random.default_rng(0)
        train = [train[i] for i in rng.permutation(len(train))]
        labels = {h: [s.labels.get(h) for s in val] for h in self.heads}
        return [s.path for s in train], ([s.path for s in val], labels)


def load(
    source: str | Path | list | None = None,
    *,
    runtime: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    cache_dir: str | Path | None = None,
    quiet: bool = True,
) -> Model:
    """Open a model: ``None`` (the bundled default), a run directory, a list of run directories (an ensemble,
    probabilities averaged) or an exported ``.onnx`` file.

    ``runtime``: 'auto' (the fastest runtime with answers equal to PyTorch fp32: ONNX Runtime on a CPU when it
    is installed, the run exported once into the cache; PyTorch otherwise), 'torch' or 'onnx'.
    ``device``: 'auto', 'cpu', 'cuda'. ``precision`` (PyTorch): 'auto' (fp32, or bf16 where the hardware has
    fast bf16 units), 'fp32', 'bf16'."""
    if isinstance(source, (list, tuple)):
        source = [str(s) for s in source] if len(source) > 1 else (str(source[0]) if source else None)
    elif source is not None:
        source = str(source)
    runner, card = load_runner(
        source, runtime=runtime, device=device, precision=precision, cache_dir=cache_dir, quiet=quiet
    )
    return Model(runner, card, source, cache_dir)


def train(
    data: str | Path, *, out: str | Path = "runs/train", mode: str = "fast", runtime: str = "auto", **options
) -> Model:
    """Train on an image folder (``root/{train,validation,test}/CLASS/*`` or ``root/CLASS/*``) or a catalogue
    CSV (``images=``, ``labels=[...]``), save the run into ``out`` and return it loaded as a :class:`Model`.
    ``mode``: 'fast' (frozen backbone, cached features, heads chosen on validation) or 'finetune'; the other
    ``options`` are :class:`~vestis.train.config.TrainConfig` fields (unknown ones are errors)."""
    from vestis.train import TrainConfig
    from vestis.train import train as run_training

    cfg = TrainConfig.from_dict(
        {"data": str(data), "out": str(out), "mode": mode, "runtime": runtime, **options}
    )
    summary = run_training(cfg)
    return load(summary["out"], runtime=runtime, device=cfg.device, cache_dir=cfg.cache_dir)


def soup(
    runs: list,
    *,
    out: str | Path,
    weights: list[float] | None = None,
    greedy: bool = False,
    validate: bool = True,
    fp16: bool = False,
    runtime: str = "auto",
    quiet: bool = True,
) -> Model:
    """Average the weights of fine-tuned runs of the same network (a model soup, :mod:`vestis.models.soup`)
    into the run directory ``out`` and return it loaded. ``greedy``: keep only the runs that do not lower the
    validation top-1 (best first, :mod:`vestis.evaluate.soup`; what was tried is stored in the config);
    ``validate``: score it on its data's validation split (as the members were) and store those metrics in
    its config; ``fp16``: store the weights in half precision (cast back to fp32 on load, as the bundled model
    is)."""
    import torch

    from vestis.evaluate.soup import greedy_soup, validation_heads
    from vestis.models.soup import save_soup, set_metrics

    if len(runs) < 2:
        raise ValueError("a soup needs at least two runs")
    if greedy and weights is not None:
        raise ValueError("a greedy soup weighs its members equally: give weights or greedy, not both")
    dtype = torch.float16 if fp16 else None
    heads = None
    if greedy:  # its metrics: the kept soup's, as scored when it was chosen
        heads = greedy_soup(runs, out, dtype=dtype, quiet=quiet)["heads"]
    else:
        save_soup(runs, out, weights, dtype=dtype)
        if validate:  # in PyTorch: an ONNX export made now would be keyed by the config about to change
            heads = validation_heads(out)
    if heads is not None:
        keep = ("n", "top1", "top_k", "macro_f1", "weighted_f1", "balanced_accuracy")
        set_metrics(out, {"validation": {h: {k: m[k] for k in keep if k in m} for h, m in heads.items()}})
    return load(out, runtime=runtime)
