"""Colour statistics of many images as a runner (:func:`~vestis.engine.features.extract_features` takes it and
caches its output like any backbone's): fast mode computes a ``--colour-stats`` model's features as the
cached backbone features beside these, the same numbers its saved model computes in one graph."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from vestis import __version__
from vestis.engine.graph import Normalize
from vestis.models.colour import NUM_STATS, PALETTE, ColourStats


class ColourRunner:
    """``runner(x) -> ({}, stats (N, NUM_STATS))`` for uint8 crops (N, H, W, 3) in ``preprocess``."""

    runtime = "torch"

    def __init__(self, preprocess):
        self.classes: dict = {}  # no heads
        self.preprocess = preprocess
        self.num_features = NUM_STATS
        self.norm = Normalize(preprocess)
        self.stats = ColourStats(preprocess.mean, preprocess.std).eval()

    @property
    def name(self) -> str:
        return "colour statistics"

    @property
    def fingerprint(self) -> str:
        ident = {
            "colour_stats": 1,
            "palette": PALETTE,
            "preprocess": self.preprocess.to_dict(),
            "v": __version__,
        }
        return "colour-" + hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def __call__(self, x) -> tuple[dict, np.ndarray]:
        with torch.inference_mode():
            return {}, self.stats(self.norm(torch.from_numpy(np.ascontiguousarray(x)))).numpy()
