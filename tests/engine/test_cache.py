"""The feature cache survives damaged chunks: they are dropped with a warning and their images recomputed."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_image
from vestis.engine.cache import FeatureCache
from vestis.engine.features import extract_features
from vestis.models.registry import create_model


def test_put_and_reload(tmp_path):
    c = FeatureCache(tmp_path, dim=3)
    c.put(["a:plain", "b:plain"], np.ones((2, 3)))
    again = FeatureCache(tmp_path, dim=3)
    assert len(again) == 2 and again["a:plain"].dtype == np.float32
    assert not list(tmp_path.glob("tmp-*"))  # written under a temporary name, then renamed


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "wrong-width", "tmp-leftover"])
def test_damaged_chunks_are_dropped(tmp_path, damage):
    c = FeatureCache(tmp_path, dim=3)
    c.put(["good:plain"], np.ones((1, 3)))
    c.put(["other:plain"], np.full((1, 3), 2.0))
    victim = sorted(tmp_path.glob("chunk-*.npz"))[0]
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        victim.write_bytes(b"")
    elif damage == "garbage":
        victim.write_bytes(b"PK\x03\x04 not really a zip")
    elif damage == "wrong-width":
        np.savez(victim, keys=np.array(["x:plain"]), feats=np.ones((1, 5), np.float32))
    else:  # a crash mid-write leaves a temporary file: never read as a chunk
        (tmp_path / "tmp-deadbeef.npz").write_bytes(data[:10])
    if damage == "tmp-leftover":
        assert len(FeatureCache(tmp_path, dim=3)) == 2
        return
    with pytest.warns(UserWarning, match="dropped damaged chunk"):
        again = FeatureCache(tmp_path, dim=3)
    assert len(again) == 1 and again.dropped == [victim.name]
    assert not victim.exists()  # removed, so the next run does not warn again


def test_extraction_recomputes_what_a_damaged_chunk_lost(tmp_path):
    paths = [make_image(tmp_path / "img" / f"{i}.png", (200, 30 * i, 40), seed=i) for i in range(6)]
    model = create_model("test_tiny")
    first = extract_features(model, paths, cache_dir=tmp_path / "c", progress=False, workers=0)
    for chunk in (tmp_path / "c").rglob("chunk-*.npz"):
        chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.warns(UserWarning, match="damaged"):
        second = extract_features(model, paths, cache_dir=tmp_path / "c", progress=False, workers=0)
    assert second.ok.all() and np.allclose(first.feats, second.feats, atol=1e-6)
    third = extract_features(
        model, paths, cache_dir=tmp_path / "c", progress=False, workers=0
    )  # cached again
    assert np.allclose(third.feats, first.feats, atol=1e-6)


def test_known_digests_are_not_read_again(tmp_path, monkeypatch):
    paths = [make_image(tmp_path / "img" / f"{i}.png", (20 * i, 90, 40), seed=i) for i in range(4)]
    model = create_model("test_tiny")
    first = extract_features(model, paths, cache=False, progress=False, workers=0)
    import vestis.engine.features as features

    hashed = []
    monkeypatch.setattr(features, "file_digest", lambda b: hashed.append(b) or "x")
    again = extract_features(model, paths, cache=False, progress=False, workers=0, digests=first.digests)
    assert hashed == [] and again.digests == first.digests
    assert np.allclose(again.feats, first.feats, atol=1e-6)
    partial = [*first.digests[:3], None]  # an unknown entry is read and hashed
    extract_features(model, paths, cache=False, progress=False, workers=0, digests=partial)
    assert len(hashed) == 1
