"""The synthetic fixture images are the same in every run (their seeds do not depend on PYTHONHASHSEED)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import hashlib, sys, tempfile
from pathlib import Path
from tests.conftest import COLOURS, make_image, stable_seed
root = Path(tempfile.mkdtemp())
for split in ("train", "validation"):
    for c, rgb in COLOURS.items():
        for i in range(3):
            p = make_image(root / split / c / f"{c}{i}.png", rgb, seed=stable_seed(split, c, i))
            print(p.relative_to(root), hashlib.sha1(p.read_bytes()).hexdigest())
"""


def test_fixture_images_do_not_depend_on_the_hash_seed():
    repo = Path(__file__).resolve().parents[2]
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT], cwd=repo, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        outs.append(done.stdout)
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == 18
    assert len({line.split()[1] for line in outs[0].splitlines()}) == 18  # every image its own noise


def test_colour_folder_seeds_are_stable(colour_folder):
    from tests.conftest import make_image, stable_seed

    assert stable_seed("train", "red", 0) == 2331948215  # zlib.crc32(b"train/red/0")
    path = colour_folder / "train" / "red" / "red0.png"
    again = make_image(colour_folder.parent / "again.png", (220, 30, 30), seed=stable_seed("train", "red", 0))
    assert hashlib.sha1(path.read_bytes()).digest() == hashlib.sha1(again.read_bytes()).digest()
