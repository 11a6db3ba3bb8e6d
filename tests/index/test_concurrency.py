"""Several writers on one index directory: two processes adding at once lose nothing, readers meanwhile always
open a whole generation, a held lock is waited for or reported, and a stale save is refused."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("faiss")

from vestis.index import Index  # noqa: E402
from vestis.index.build import remove_from_index  # noqa: E402
from vestis.index.files import IndexConflict, IndexLocked, locked  # noqa: E402

D = 16
EACH = 12  # one-item edits per writer process


def _vec(tag: int, i: int) -> np.ndarray:
    return np.random.default_rng([tag, i]).standard_normal((1, D)).astype(np.float32)


def _base(d):
    x = np.random.default_rng(0).standard_normal((20, D)).astype(np.float32)
    Index.create(
        x,
        paths=[f"base/{i}.jpg" for i in range(20)],
        columns={"writer": ["base"] * 20},
        model={"fingerprint": "fp-test"},
        kind="flat",
    ).save(d)
    return x


def _writer(d: str, tag: int, start, done) -> None:
    start.wait(30)
    for i in range(EACH):
        with Index.edit(d, timeout=60) as index:
            index.add(_vec(tag, i), paths=[f"w{tag}/{i}.jpg"], columns={"writer": [f"w{tag}"]})
            time.sleep(0.005)  # widen the read-modify-write window
    if tag == 1:  # and a removal racing the other writer's adds
        remove_from_index(d, [3], lock_timeout=60)
    done.put(tag)


def test_two_processes_adding_at_once_lose_nothing(tmp_path):
    d = tmp_path / "idx"
    _base(d)
    ctx = mp.get_context("spawn")  # no fork after Faiss's OpenMP threads started
    start, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(d), t, start, done)) for t in (1, 2)]
    for p in procs:
        p.start()
    start.set()
    opened = 0
    while any(p.is_alive() for p in procs):  # readers see whole generations while the writers replace them
        assert len(Index.open(d)) >= 20
        opened += 1
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(done.get(timeout=5) for _ in procs) == [1, 2] and opened > 0
    index = Index.open(d)
    assert len(index) == 20 + 2 * EACH - 1
    assert len(set(index.ids.tolist())) == len(index) and 3 not in index.ids.tolist()
    assert sorted(p for p in index.paths if not p.startswith("base/")) == sorted(
        f"w{t}/{i}.jpg" for t in (1, 2) for i in range(EACH)
    )
    for t in (1, 2):  # every added vector is its own nearest item
        for i in range(EACH):
            best = index.search_vectors(_vec(t, i), k=1)[0][0]
            assert best["path"] == f"w{t}/{i}.jpg" and best["writer"] == f"w{t}"
    assert index.manifest["next_id"] == 20 + 2 * EACH  # ids never reused
    assert (d / ".lock").read_text() == ""  # released


def test_a_held_lock_is_waited_for_then_reported(tmp_path, capsys):
    d = tmp_path / "idx"
    _base(d)
    with ThreadPoolExecutor(1) as pool:  # another thread: another lock holder, as another process would be
        with locked(d, what="test"):
            note = json.loads((d / ".lock").read_text())
            assert note["what"] == "test" and note["pid"] > 0
            with pytest.raises(
                IndexLocked, match=r"another process is writing this index \(pid \d+, test since"
            ):
                pool.submit(remove_from_index, d, [1], lock_timeout=0.3).result()
            waiting = pool.submit(remove_from_index, d, [1], lock_timeout=30)
            time.sleep(0.3)
            assert not waiting.done()  # it waits ...
        assert waiting.result(timeout=30)["removed"] == 1  # ... and lands once the holder is done
    assert "waiting for another process writing this index" in capsys.readouterr().err
    assert 1 not in Index.open(d).ids.tolist() and len(Index.open(d)) == 19


def test_a_save_after_another_writer_is_refused_and_edit_does_not_save_on_error(tmp_path):
    d = tmp_path / "idx"
    _base(d)
    a, b = Index.open(d), Index.open(d)
    a.add(_vec(1, 0), paths=["a.jpg"], columns={"writer": ["a"]})
    a.save()
    b.add(_vec(2, 0), paths=["b.jpg"], columns={"writer": ["b"]})
    with pytest.raises(IndexConflict, match="another process changed this index since it was opened"):
        b.save()
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / ".lock").write_text("")  # left by a writer that died before its first save
    b.save(tmp_path / "copy")  # another directory is fine, and one holding only a lock file
    assert "b.jpg" in Index.open(tmp_path / "copy").paths
    a.remove([0])
    a.save()  # its own generation: fine again
    with pytest.raises(KeyError), Index.edit(d) as index:
        index.remove([12345])
    after = Index.open(d)
    assert len(after) == 20 and "a.jpg" in after.paths and "b.jpg" not in after.paths
    with Index.edit(d, timeout=0) as index:  # the failed edit released the lock: no wait needed
        index.remove([1])
    assert len(Index.open(d)) == 19
