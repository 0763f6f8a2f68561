"""The reader process of a MARC import: the same batches as in process, errors carried
over, and never left running."""

from __future__ import annotations

import os
import sys
import types
from multiprocessing import spawn
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest

from conftest import MARC_DIR
from shelfmark.interop import marc_prepare
from shelfmark.interop.marc_prepare import PreparedBatch, prepare, prepared_batches
from shelfmark.interop.marc_read import MarcFileError


@pytest.fixture
def in_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file is prepared in a child process, however small."""
    monkeypatch.setattr(marc_prepare, "CHILD_MIN_BYTES", 0)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[BaseProcess]:
    """The child processes prepared_batches starts, as it starts them."""
    children: list[BaseProcess] = []
    real_process = marc_prepare._START.Process

    def process(*args: object, **kwargs: object) -> object:
        child = real_process(*args, **kwargs)  # type: ignore[arg-type]
        children.append(child)
        return child

    monkeypatch.setattr(marc_prepare._START, "Process", process)
    return children


def summary(batches: list[PreparedBatch]) -> list[tuple[int, list[int], list[int], list[str]]]:
    return [
        (b.read, [i.index for i in b.incoming], [e["index"] for e in b.errors],
         [i.values["fingerprint"] for i in b.incoming])
        for b in batches
    ]  # fmt: skip


@pytest.mark.usefixtures("in_child")
async def test_a_child_prepares_the_same_batches_as_this_process() -> None:
    for name in ("marc.dat", "bad_records.mrc", "marc8.dat"):
        path = MARC_DIR / name
        from_child = [b async for b in prepared_batches(path, 7)]
        assert summary(from_child) == summary(list(prepare(path, 7)))
        assert sum(b.read for b in from_child) > 0
        # What the child sends is complete: the bibs row, the copies, the search row.
        first = next(i for b in from_child for i in b.incoming)
        assert first.values["title"]
        assert first.values["marc"]
        assert first.search.values["title_text"]


@pytest.mark.usefixtures("in_child")
async def test_a_file_that_is_not_marc_fails_as_in_process(tmp_path: Path) -> None:
    path = tmp_path / "notes.mrc"
    path.write_bytes(b"Dear librarian, this is a letter, not a catalogue.\n" * 50)
    with pytest.raises(MarcFileError, match="not a MARC21 file"):
        [b async for b in prepared_batches(path, 10)]


@pytest.mark.usefixtures("in_child")
async def test_stopping_early_stops_the_child(started: list[BaseProcess]) -> None:
    batches = prepared_batches(MARC_DIR / "marc.dat", 1)
    first = await anext(batches)
    assert first.read == 1
    await batches.aclose()
    assert 1 <= len(started) <= marc_prepare.CHILD_PROCESSES
    assert not any(child.is_alive() for child in started)


@pytest.mark.usefixtures("in_child")
@pytest.mark.parametrize("batch_size", [1, 3, 7, 500])
async def test_children_share_the_batches_in_file_order(batch_size: int) -> None:
    for name in ("marc.dat", "bad_records.mrc", "batch.xml"):
        path = MARC_DIR / name
        from_children = [b async for b in prepared_batches(path, batch_size)]
        assert summary(from_children) == summary(list(prepare(path, batch_size)))


@pytest.mark.usefixtures("in_child")
@pytest.mark.parametrize("join_ready", [2, 4])
async def test_batches_already_waiting_are_joined_in_order(join_ready: int) -> None:
    for name in ("marc.dat", "bad_records.mrc"):
        path = MARC_DIR / name
        joined = [b async for b in prepared_batches(path, 2, join_ready=join_ready)]
        whole = list(prepare(path, 2))
        assert all(b.read <= 2 * join_ready for b in joined)
        # Every record once, in file order, whatever was joined to what.
        records = [i.index for b in joined for i in b.incoming]
        assert records == [i.index for b in whole for i in b.incoming]
        assert [e["index"] for b in joined for e in b.errors] == [
            e["index"] for b in whole for e in b.errors
        ]
        assert sum(b.read for b in joined) == sum(b.read for b in whole)


@pytest.mark.parametrize("shards", [2, 3])
def test_shards_together_prepare_every_batch_once(shards: int) -> None:
    path = MARC_DIR / "marc.dat"
    whole = summary(list(prepare(path, 4)))
    parts = [summary(list(prepare(path, 4, shard=s, shards=shards))) for s in range(shards)]
    interleaved = [parts[n % shards][n // shards] for n in range(len(whole))]
    assert interleaved == whole
    assert sum(len(p) for p in parts) == len(whole)


def test_a_child_is_started_without_the_parent_s_main_module(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """spawn's children import the parent's main module (the CLI, the whole app) unless
    there is none to import: while a child starts, a bare module stands in for it."""
    script = tmp_path / "script.py"
    script.write_text("")
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert "init_main_from_path" in spawn.get_preparation_data("x")
    with marc_prepare._bare_main():
        data = spawn.get_preparation_data("shelfmark-marc-prepare-0")
        assert "init_main_from_path" not in data
        assert "init_main_from_name" not in data
    assert sys.modules["__main__"] is main  # the real one is back


@pytest.mark.usefixtures("in_child")
async def test_the_first_batch_is_prepared_here_and_the_children_run_below_this_process(
    monkeypatch: pytest.MonkeyPatch, started: list[BaseProcess]
) -> None:
    prepared_here = []
    real_prepare = marc_prepare.prepare

    def prepare_here(*args: object, **kwargs: object) -> object:
        prepared_here.append(kwargs)
        return real_prepare(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(marc_prepare, "prepare", prepare_here)
    batches = prepared_batches(MARC_DIR / "marc.dat", 1)
    first = await anext(batches)
    assert [i.index for i in first.incoming] == [1]
    assert prepared_here == [{}]  # batch 0, in this process; the children skip it
    second = await anext(batches)
    assert [i.index for i in second.incoming] == [2]
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    alive = [child for child in started if child.is_alive()]
    assert alive  # each has more batches than its queue holds left to send
    for child in alive:
        assert child.pid is not None
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(
            mine + marc_prepare.CHILD_NICENESS, 19
        )
    await batches.aclose()
