"""write_report with Grad-CAM overlays in the error gallery."""

from __future__ import annotations

import numpy as np

from vestis.evaluate.report import write_report


def test_gallery_overlays_for_the_first_n_errors(tmp_path):
    calls = []

    def explain(paths, head, classes):
        calls.append((list(paths), head, list(classes)))
        return [np.full((8, 8, 3), 200, np.uint8), None][: len(paths)]

    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.9, 0.1]])
    paths = ["p0", "p1", "p2", "p3"]
    results = {"h": {"class_names": ["a", "b"], "paths": paths, "y_true": [0, 0, 0, 0], "probs": probs}}
    write_report(tmp_path, results, "test", explain=explain, n_explain=2)
    # the two most confidently wrong images, explained for their predicted class (b = 1)
    assert calls == [(["p0", "p1"], "h", [1, 1])]
    assert (tmp_path / "errors_h.png").is_file()


def test_no_explain_by_default(tmp_path):
    results = {
        "h": {"class_names": ["a", "b"], "paths": ["p0"], "y_true": [0], "probs": np.array([[0.2, 0.8]])}
    }
    write_report(tmp_path, results, "test", explain=lambda *a: 1 / 0, n_explain=0)
    assert (tmp_path / "errors_h.png").is_file()
