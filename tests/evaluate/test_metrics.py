import json
import math

import numpy as np
import pytest

from vestis.evaluate import compute_metrics, format_table, most_confident_errors

NAMES = ["a", "b", "c"]
Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2])


def probs_for(y_true, y_pred, n_classes):
    """Predicted class gets 0.6, the true class (if wrong) 0.3, the rest share what is left."""
    p = np.zeros((len(y_true), n_classes))
    for i, (t, q) in enumerate(zip(y_true, y_pred, strict=True)):
        p[i] = (0.4 if t == q else 0.1) / (n_classes - (1 if t == q else 2))
        p[i, q] = 0.6
        if t != q:
            p[i, t] = 0.3
    return p


@pytest.fixture
def metrics():
    return compute_metrics(Y_TRUE, probs_for(Y_TRUE, Y_PRED, 3), NAMES, ks=(2, 3, 5))


def test_hand_computed_three_class(metrics):
    m = metrics
    assert m["n"] == 6
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["top_k"] == {"2": pytest.approx(1.0)}  # k=3 and k=5 are >= C and omitted
    per = {c["class"]: c for c in m["per_class"]}
    assert [c["class"] for c in m["per_class"]] == NAMES
    assert [per[n]["support"] for n in NAMES] == [3, 2, 1]
    assert [per[n]["precision"] for n in NAMES] == pytest.approx([1.0, 0.5, 0.5])
    assert [per[n]["recall"] for n in NAMES] == pytest.approx([2 / 3, 0.5, 1.0])
    assert [per[n]["f1"] for n in NAMES] == pytest.approx([0.8, 0.5, 2 / 3])
    assert [per[n]["accuracy"] for n in NAMES] == pytest.approx([5 / 6, 4 / 6, 5 / 6])
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert m["log_loss"] == pytest.approx(-(4 * math.log(0.6) + 2 * math.log(0.3)) / 6)
    assert m["macro_avg"]["precision"] == pytest.approx(2 / 3)
    assert m["weighted_avg"]["recall"] == pytest.approx(4 / 6)


def test_json_serialisable(metrics):
    assert json.loads(json.dumps(metrics)) == metrics


def test_top_k_counts_true_class_in_top_k():
    y = np.array([0, 1, 2, 3])
    p = np.array(
        [
            [0.7, 0.1, 0.1, 0.1],  # top-1 right
            [0.5, 0.3, 0.15, 0.05],  # rank 2
            [0.4, 0.3, 0.2, 0.1],  # rank 3
            [0.4, 0.3, 0.2, 0.1],
        ]
    )  # rank 4
    m = compute_metrics(y, p, list("abcd"), ks=(1, 2, 3, 4))
    assert m["top1"] == pytest.approx(0.25)
    assert m["top_k"] == pytest.approx({"1": 0.25, "2": 0.5, "3": 0.75})


def test_zero_support_class_reported_not_crashing():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 3])  # "d" is predicted once but never true; "c" never appears at all
    m = compute_metrics(y, probs_for(y, pred, 4), list("abcd"))
    per = {c["class"]: c for c in m["per_class"]}
    for name in "cd":  # no true image: recall, F1 and accuracy are undefined, not 0 and not a perfect 1
        assert per[name]["support"] == 0
        assert per[name]["recall"] is None and per[name]["f1"] is None and per[name]["accuracy"] is None
    assert per["c"]["precision"] is None  # never predicted either
    assert per["d"]["precision"] == 0.0  # predicted once, wrongly
    assert m["confusion"][2] == [0, 0, 0, 0] and m["confusion"][1] == [0, 1, 0, 1]
    assert m["macro_f1"] == pytest.approx((1.0 + 2 / 3) / 2)  # averaged over classes present in y_true
    assert m["top_k"] == {"3": pytest.approx(1.0)}


@pytest.mark.parametrize(
    "y, p, names, msg",
    [
        (np.array([0, 1]), np.full((2, 2), 0.5), NAMES, "class names"),
        (np.array([0, 1, 1]), np.full((2, 3), 1 / 3), NAMES, "samples"),
        (np.array([], dtype=int), np.zeros((0, 3)), NAMES, "zero samples"),
        (np.array([0, 3]), np.full((2, 3), 1 / 3), NAMES, "outside"),
        (np.array([-1, 0]), np.full((2, 3), 1 / 3), NAMES, "outside"),
        (np.array([[0, 1]]), np.full((2, 3), 1 / 3), NAMES, "1-D"),
        (np.array([0, 1]), np.full(3, 1 / 3), NAMES, "2-D"),
        (np.array([0, 1]), np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]]), NAMES, "logits"),
        (np.array([0.5, 1.0]), np.full((2, 3), 1 / 3), NAMES, "integer"),
    ],
)
def test_invalid_inputs_raise(y, p, names, msg):
    with pytest.raises(ValueError, match=msg):
        compute_metrics(y, p, names)


def test_most_confident_errors_order_and_k():
    y = np.array([0, 1, 0, 1, 0])
    p = np.array(
        [
            [0.2, 0.8],  # wrong, 0.8
            [0.1, 0.9],  # right
            [0.05, 0.95],  # wrong, 0.95
            [0.7, 0.3],  # wrong, 0.7
            [0.9, 0.1],
        ]
    )  # right
    assert most_confident_errors(y, p) == [2, 0, 3]
    assert most_confident_errors(y, p, k=2) == [2, 0]
    assert most_confident_errors(y, p, k=0) == []
    assert most_confident_errors(np.array([1, 0]), np.array([[0.1, 0.9], [0.8, 0.2]])) == []


def test_format_table_lists_every_class_and_totals(metrics):
    text = format_table(json.loads(json.dumps(metrics)), title="articleType")
    lines = text.splitlines()
    assert lines[0] == "articleType"
    for name in NAMES + ["macro avg", "weighted avg", "top-1", "top-2", "macro-F1"]:
        assert any(line.startswith(name) for line in lines), name
    assert "top-3" not in text
    class_rows = [line for line in lines if line.split(" ")[0] in NAMES]
    assert len({len(r) for r in class_rows}) == 1  # fixed width
    assert "0.8000" in next(r for r in class_rows if r.startswith("a "))  # f1 of class a


def test_class_without_validation_images_is_not_a_perfect_class():
    """A class absent from the split showed accuracy 1.0000 (one-vs-rest, never predicted): it must show
    support 0 and "-" in the table, null in JSON, and stay out of the macro averages."""
    y = np.array([0, 0, 1, 1, 0, 1])
    pred = np.array([0, 1, 1, 1, 0, 0])
    p3 = probs_for(y, pred, 3)
    m = compute_metrics(y, p3, ["a", "b", "absent"])
    absent = m["per_class"][2]
    assert absent["support"] == 0
    assert all(absent[k] is None for k in ("precision", "recall", "f1", "accuracy"))
    assert json.loads(json.dumps(m))["per_class"][2]["accuracy"] is None  # null, and valid JSON
    with_absent = m["macro_avg"]
    p2 = p3[:, :2] / p3[:, :2].sum(axis=1, keepdims=True)  # the same predictions without the third class
    alone = compute_metrics(y, p2, ["a", "b"])["macro_avg"]
    assert with_absent == pytest.approx(alone)  # the absent class is not averaged in as perfect
    assert m["macro_f1"] == pytest.approx(alone["f1"])

    row = next(r for r in format_table(m).splitlines() if r.startswith("absent"))
    assert row.split() == ["absent", "0", "-", "-", "-", "-"]
    assert "1.0000" not in row
    # the table still lines up
    rows = [r for r in format_table(m).splitlines() if r.split(" ")[0] in ("a", "b", "absent")]
    assert len({len(r) for r in rows}) == 1
