"""A synthetic multi-column catalogue for the evaluation tests: styles.csv + images/, year split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import make_image

HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"
# articleType -> (subCategory, masterCategory, image colour)
TREE = {
    "Tshirts": ("Topwear", "Apparel", (220, 30, 30)),
    "Shirts": ("Topwear", "Apparel", (240, 240, 240)),
    "Jeans": ("Bottomwear", "Apparel", (30, 40, 220)),
    "Watches": ("Watches", "Accessories", (30, 200, 40)),
    "Belts": ("Belts", "Accessories", (230, 230, 40)),
}
UNSEEN = ("Caps", "Headwear", "Accessories", (200, 40, 200))  # only in odd (test) years


def make_catalogue(root: Path, train: int = 30, test: int = 6, seed: int = 0) -> Path:
    """Even years (training; ``train`` rows per article type) hold the article types above, one Belts row filed
    under Apparel (an exception to the hierarchy, under 1 % of the rows) and some genders missing; odd years
    (test; ``test`` rows each) hold them too plus 3 Caps rows, a class the model never sees."""
    rng = np.random.default_rng(seed)
    lines = [HEADER]
    rows = [(a, *TREE[a], 2012) for a in TREE for _ in range(train)]
    rows += [(a, *TREE[a], 2013) for a in TREE for _ in range(test)]
    rows += [(UNSEEN[0], UNSEEN[1], UNSEEN[2], UNSEEN[3], 2013)] * 3
    rows.append(("Belts", "Belts", "Apparel", TREE["Belts"][2], 2012))  # the inconsistent row
    for n, (article, sub, master, colour, year) in enumerate(rows):
        gender = "" if rng.random() < 0.1 else ["Men", "Women"][int(rng.integers(2))]
        lines.append(f"{n},{gender},{master},{sub},{article},Blue,Summer,{year},Casual,Item {n}")
        make_image(root / "images" / f"{n}.jpg", colour, seed=int(rng.integers(1 << 30)))
    path = root / "styles.csv"
    path.write_text("\n".join(lines) + "\n")
    return path
