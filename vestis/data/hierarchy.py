"""Label hierarchies learned from a catalogue: "articleType implies subCategory implies masterCategory".

A finer head *implies* a coarser one when (nearly) every training row with a given finer value carries the
same coarser value. The rule, decided here once for every caller:

- for a pair of heads, only training rows with both values present count (``rows``); each finer value maps
  to its most frequent coarser value, and a row whose coarser value differs from that is an *exception*;
- the implication holds when the exceptions are at most ``max_exceptions`` (default 1 %) of the rows, the
  finer head has strictly more values than the coarser one (which has at least two), and there are at least
  ``min_rows_per_value`` rows per finer value on average (so a tiny sample where every value is seen once
  does not "imply" everything).

On the shared catalogue the three heads above hold with 94 and 13 exceptions in 44,446 rows (0.2 %); gender,
usage, season and colour are implied by nothing. The heads that hold form a directed acyclic graph (edges
go to fewer values); the table is its longest chain, with one combination per finest value: that value
followed by what it implies at each coarser level. Exception rows are counted, never part of a combination.

Used three ways: the trainers store :func:`learn_hierarchy` in the model card, evaluation counts the
predictions that break it (:func:`consistency`), and prediction may decode the chain's heads jointly
(:func:`consistent_decode`). Numpy and the standard library only (layer 0)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

MAX_EXCEPTIONS = 0.01
MIN_ROWS_PER_VALUE = 2.0


def _pair(samples, fine: str, coarse: str) -> tuple[dict[str, str], int, int]:
    """(finer value -> its most frequent coarser value, rows with both values, exception rows)."""
    counts: dict[str, Counter] = {}
    for s in samples:
        f, c = s.labels.get(fine), s.labels.get(coarse)
        if f is not None and c is not None:
            counts.setdefault(str(f), Counter())[str(c)] += 1
    mapping, rows, exceptions = {}, 0, 0
    for f in sorted(counts):
        # most frequent, ties broken by name so the table does not depend on the row order
        c, n = min(counts[f].items(), key=lambda kv: (-kv[1], kv[0]))
        total = sum(counts[f].values())
        mapping[f] = c
        rows += total
        exceptions += total - n
    return mapping, rows, exceptions


def _implies(mapping, rows, exceptions, max_exceptions, min_rows_per_value) -> bool:
    n_fine, n_coarse = len(mapping), len(set(mapping.values()))
    return (
        rows > 0
        and n_coarse >= 2
        and n_fine > n_coarse
        and exceptions <= max_exceptions * rows
        and rows >= min_rows_per_value * n_fine
    )


def learn_hierarchy(
    samples: Sequence,
    heads: Sequence[str],
    max_exceptions: float = MAX_EXCEPTIONS,
    min_rows_per_value: float = MIN_ROWS_PER_VALUE,
) -> dict | None:
    """The implication table of ``heads`` in ``samples`` (training samples: ``.labels`` maps a head to a value
    or None), or None when no head implies another (see the module docstring for the rule).

    Returns (JSON-serialisable) ``{"chain": [finest, ..., coarsest], "combos": [[v_finest, ..., v_coarsest],
    ...], "counts": [training rows with that finest value, ...], "pairs": [{"fine", "coarse", "rows",
    "exceptions"}, ...] (one per consecutive pair of the chain), "max_exceptions", "min_rows_per_value"}``."""
    heads = list(dict.fromkeys(heads))
    edges: dict[tuple[str, str], tuple[dict, int, int]] = {}
    n_values = {h: len({str(s.labels[h]) for s in samples if s.labels.get(h) is not None}) for h in heads}
    for fine in heads:
        for coarse in heads:
            if fine == coarse or n_values[fine] <= n_values[coarse]:
                continue
            got = _pair(samples, fine, coarse)
            if _implies(*got, max_exceptions, min_rows_per_value):
                edges[(fine, coarse)] = got
    if not edges:
        return None

    # longest path in the DAG (every edge goes to a head with fewer values); ties: fewer exceptions, then
    # the order of `heads`
    order = sorted(heads, key=lambda h: n_values[h])  # coarsest first: successors come before
    best: dict[str, tuple[int, int, list[str]]] = {}
    for h in order:
        cands = [(1, 0, [h])]
        for (f, c), (_, _, exc) in edges.items():
            if f == h:
                length, e, path = best[c]
                cands.append((length + 1, e + exc, [h, *path]))
        best[h] = max(cands, key=lambda t: (t[0], -t[1], [-heads.index(x) for x in t[2]]))
    chain = max(best.values(), key=lambda t: (t[0], -t[1], [-heads.index(x) for x in t[2]]))[2]

    maps = [edges[(f, c)][0] for f, c in zip(chain, chain[1:], strict=False)]
    support = Counter(str(s.labels[chain[0]]) for s in samples if s.labels.get(chain[0]) is not None)
    combos, counts = [], []
    for v in sorted(maps[0]):
        combo = [v]
        for m in maps:
            if combo[-1] not in m:  # a value only ever seen with the next head missing
                break
            combo.append(m[combo[-1]])
        else:
            combos.append(combo)
            counts.append(int(support[v]))
    return {
        "chain": chain,
        "combos": combos,
        "counts": counts,
        "pairs": [
            {"fine": f, "coarse": c, "rows": edges[(f, c)][1], "exceptions": edges[(f, c)][2]}
            for f, c in zip(chain, chain[1:], strict=False)
        ],
        "max_exceptions": max_exceptions,
        "min_rows_per_value": min_rows_per_value,
    }


def _combos_for(table: Mapping, classes: Mapping[str, Sequence[str]]) -> tuple[list[str], np.ndarray] | None:
    """(the chain's heads present in ``classes``, K x H class indices of the valid combinations).

    Combinations naming a class the model does not have are dropped. A class of a chain head that no
    combination names (the table knows nothing about it: seen only with missing values, or folded) is left
    unconstrained: it may go with any combination of the other heads."""
    chain = [h for h in table.get("chain", []) if h in classes]
    if len(chain) < 2:
        return None
    pos = [table["chain"].index(h) for h in chain]
    index = {h: {c: i for i, c in enumerate(classes[h])} for h in chain}
    combos = set()
    for combo in table.get("combos", []):
        vals = [combo[p] for p in pos]
        if all(v in index[h] for v, h in zip(vals, chain, strict=True)):
            combos.add(tuple(index[h][v] for v, h in zip(vals, chain, strict=True)))
    if not combos:
        return None
    base = sorted(combos)
    for j, h in enumerate(chain):
        named = {c[j] for c in base}
        for k in range(len(classes[h])):
            if k not in named:
                combos.update(c[:j] + (k,) + c[j + 1 :] for c in base)
    return chain, np.array(sorted(combos), dtype=np.int64)


def consistent_decode(
    probs: Mapping[str, np.ndarray], classes: Mapping[str, Sequence[str]], table: Mapping | None
) -> dict[str, np.ndarray]:
    """Per-head probabilities (N, C) decoded jointly over the chain's valid combinations.

    Every combination seen in training (``table["combos"]``) is scored by the sum of its heads'
    log-probabilities; a class's new probability is the score of the best combination through it (max-product
    decoding), renormalised over the head's classes. So each head's argmax is the best combination's class
    and the argmaxes together always form a valid combination; on the finest head the result is the joint
    posterior of the combinations. Heads outside the chain, and everything when the table is None or names
    fewer than two of these heads, are returned unchanged. The input is not modified."""
    out = {h: np.asarray(p) for h, p in probs.items()}
    got = _combos_for(table, {h: classes[h] for h in probs}) if table else None
    if got is None:
        return out
    chain, combos = got
    tiny = np.finfo(np.float64).tiny
    score = np.zeros((len(np.asarray(probs[chain[0]])), len(combos)))
    for j, h in enumerate(chain):
        score += np.log(np.maximum(np.asarray(probs[h], np.float64)[:, combos[:, j]], tiny))
    for j, h in enumerate(chain):
        p = np.asarray(probs[h])
        best = np.full((p.shape[1], p.shape[0]), -np.inf)  # (C, N)
        np.maximum.at(best, combos[:, j], score.T)
        best = best.T
        best = np.exp(best - best.max(axis=1, keepdims=True))
        out[h] = (best / best.sum(axis=1, keepdims=True)).astype(
            p.dtype if p.dtype.kind == "f" else np.float64
        )
    return out


def consistency(preds: Mapping[str, Sequence[str]], table: Mapping | None) -> dict:
    """How many predicted label tuples break the table. ``preds``: head -> predicted class names (one per
    row, the same rows for every head; a None is a row without that prediction, not checked).

    A row is inconsistent when its values of the chain's heads form no valid combination; values the table
    knows nothing about are unconstrained (as in :func:`consistent_decode`). Returns ``{"chain" (the heads
    checked), "n" (rows checked), "inconsistent", "rate", "pairs": {"fine -> coarse": rows where the coarse
    prediction is not what the fine one implies}}``."""
    chain = [h for h in (table or {}).get("chain", []) if h in preds]
    if len(chain) < 2:
        return {"chain": chain, "n": 0, "inconsistent": 0, "rate": None, "pairs": {}}
    pos = [table["chain"].index(h) for h in chain]
    combos = {tuple(c[p] for p in pos) for c in table["combos"]}
    known = [{c[j] for c in combos} for j in range(len(chain))]
    projections: dict[tuple[bool, ...], set] = {}
    implied = [{c[j]: c[j + 1] for c in combos} for j in range(len(chain) - 1)]
    cols = [list(preds[h]) for h in chain]
    n = bad = 0
    pairs = Counter()
    for row in zip(*cols, strict=True):
        if any(v is None for v in row):
            continue
        n += 1
        mask = tuple(v in k for v, k in zip(row, known, strict=True))
        if mask not in projections:
            projections[mask] = {tuple(c[j] for j in range(len(chain)) if mask[j]) for c in combos}
        bad += tuple(v for v, m in zip(row, mask, strict=True) if m) not in projections[mask]
        for j, m in enumerate(implied):
            if row[j] in m and row[j + 1] in known[j + 1] and m[row[j]] != row[j + 1]:
                pairs[f"{chain[j]} -> {chain[j + 1]}"] += 1
    return {
        "chain": chain,
        "n": n,
        "inconsistent": bad,
        "rate": bad / n if n else None,
        "pairs": {f"{a} -> {b}": pairs[f"{a} -> {b}"] for a, b in zip(chain, chain[1:], strict=False)},
    }
