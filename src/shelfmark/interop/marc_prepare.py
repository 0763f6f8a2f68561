"""The CPU half of a MARC import — read, map, fingerprint, fold for search — in batches, and
for a file of any size in child processes, so that it runs beside the database writes.

Parsing and mapping a record costs about as much as writing it; on one process the import
ran at the sum of the two. Child processes that prepare the next batches while the importer
writes one make it run at the larger of the two (bench/marc_import.py). There are
`CHILD_PROCESSES` of them (at most one per CPU), child k preparing batches 1 + k, 1 + k + n,
… (the importer prepares batch 0 while they start); each reads the whole file but parses
only its own records. A child imports only this module's
light dependencies (no SQLAlchemy, no app), so that it starts in a fraction of a second; a
small file or an open stream is prepared in process instead.

What crosses between the processes is plain data (dicts, tuples, bytes), at most
`QUEUE_BATCHES` batches ahead per child, so that memory stays flat however long the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import queue
import sys
import types
from collections.abc import AsyncGenerator, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, BinaryIO

from shelfmark.interop.marc_map import (
    MAPPED_TAGS,
    BibData,
    HoldingData,
    map_holdings,
    map_record,
)
from shelfmark.interop.marc_read import ReadResult, iter_marc
from shelfmark.search.text import IndexRow, index_row

QUEUE_BATCHES = 3  # per child
# Preparing a record costs about 2.5 times pymarc's parse alone: two children (where there
# are two CPUs) keep up with the database writes better than one.
CHILD_PROCESSES = 2
CHILD_MIN_BYTES = 4 * 1024 * 1024  # below this a child costs more than it saves
CHILD_NICENESS = 10  # see _start_child
_POLL_SECONDS = 1.0
_START = multiprocessing.get_context("spawn")  # never fork a process that runs threads


@dataclass(frozen=True, slots=True)
class Incoming:
    """A record ready to be written: its `bibs` row, its copies and its search row."""

    index: int
    values: dict[str, Any]
    holdings: tuple[HoldingData, ...]
    search: IndexRow

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as its parts and rebuilt by its constructor: a frozen dataclass's default
        # unpickling looks up its fields once per object, a cost the importer felt.
        search = (self.search.values, self.search.headings)
        return (_incoming, (self.index, self.values, self.holdings, search))


def _incoming(
    index: int, values: dict[str, Any], holdings: tuple[HoldingData, ...],
    search: tuple[dict[str, Any], dict[str, str]],
) -> Incoming:  # fmt: skip
    return Incoming(index, values, holdings, IndexRow(*search))


@dataclass(slots=True)
class PreparedBatch:
    read: int = 0
    incoming: list[Incoming] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)


def bib_values(data: BibData, marc: bytes | None) -> dict[str, Any]:
    """The row of `bibs` that a mapped record (and its UTF-8 MARC21 bytes) becomes."""
    return {
        "title": data.title,
        "subtitle": data.subtitle,
        "contributors": [{"name": c.name, "role": c.role} for c in data.contributors],
        "isbns": list(data.isbns),
        "publisher": data.publisher,
        "publication_year": data.publication_year,
        "edition": data.edition,
        "language": data.language,
        "subjects": list(data.subjects),
        "series": list(data.series),
        "description": data.description,
        "material_type": data.material_type or "book",
        "control_number": data.control_number,
        "marc": marc,
        "fingerprint": data.fingerprint(),
    }


def prepare_batch(results: Sequence[ReadResult]) -> PreparedBatch:
    """Map a batch of read records; unreadable and unmappable ones become errors."""
    batch = PreparedBatch()
    for result in results:
        _add(batch, result)
    return batch


def _add(batch: PreparedBatch, result: ReadResult) -> None:
    """Map one read record into `batch`, or note why it cannot be."""
    batch.read += 1
    if result.record is None:
        batch.errors.append(
            {"index": result.index, "control_number": result.control_number,
             "reason": result.error or "unreadable record"}
        )  # fmt: skip
        return
    try:
        data = map_record(result.record)
        holdings = map_holdings(result.record)
        values = bib_values(data, result.marc21())
        search = index_row(values)
    except Exception as exc:  # one bad record never stops a file
        batch.errors.append(
            {"index": result.index, "control_number": result.control_number,
             "reason": f"cannot map the record: {exc}"}
        )  # fmt: skip
        return
    for warning in (*result.warnings, *data.warnings):
        batch.warnings.append(
            {"index": result.index, "control_number": data.control_number, "reason": warning}
        )
    batch.incoming.append(Incoming(result.index, values, holdings, search))


def prepare(
    source: Path | BinaryIO, batch_size: int, *, shard: int = 0, shards: int = 1, skip: int = 0
) -> Generator[PreparedBatch, None, None]:
    """Prepared batches of `source`, in this process. Raises MarcFileError, before yielding
    anything, when the file cannot be read as MARC.

    Batch n holds records n * batch_size + 1 to (n + 1) * batch_size. With `skip`, the
    first `skip` batches are left out; with `shards`, this prepares only the batches n
    (from `skip` on) where (n - skip) % shards == shard. No other record is read.
    """

    def mine(index: int) -> bool:
        number = (index - 1) // batch_size
        return number >= skip and (number - skip) % shards == shard

    # Each record is mapped as soon as it is read, so that its pymarc objects (dozens per
    # record) are freed at once rather than held for a whole batch: held, they made the
    # garbage collector's full passes cost more than the mapping itself.
    batch = PreparedBatch()
    number = skip + shard
    # Only the mapped fields are decoded: the record's own bytes are what is kept of it.
    selected = mine if shards > 1 or skip else None
    for result in iter_marc(source, select=selected, tags=MAPPED_TAGS):
        if (result.index - 1) // batch_size != number:
            if batch.read:
                yield batch
            batch = PreparedBatch()
            number = (result.index - 1) // batch_size
        _add(batch, result)
    if batch.read:
        yield batch


async def prepared_batches(
    source: Path | BinaryIO, batch_size: int, *, join_ready: int = 1
) -> AsyncGenerator[PreparedBatch, None]:
    """Prepared batches of `source`, in order: from child processes for a file worth them,
    each preparing every `len(children)`-th batch, else from this process. The children are
    stopped when the caller stops early (or fails).

    With `join_ready`, batches from the children that are already waiting when one is
    taken are joined to it, up to that many in one: a caller slower than the children
    then gets larger batches (fewer, larger transactions), and one that waits gets each
    batch as soon as it is ready.

    The first batch is prepared in this process, while the children start: the caller
    then has one to write at once, where it waited a fifth of a second, a tenth of a
    10,000-record import, for a child's first.
    """
    if not isinstance(source, Path) or file_size(source) < CHILD_MIN_BYTES:
        for batch in prepare(source, batch_size):
            yield batch
        return
    shards = max(1, min(CHILD_PROCESSES, os.cpu_count() or 1))
    queues: list[Any] = [_START.Queue(maxsize=QUEUE_BATCHES) for _ in range(shards)]
    children = [_start_child(source, batch_size, queues, shard) for shard in range(shards)]

    def fetch(first: int) -> asyncio.Future[list[PreparedBatch | BaseException | None]]:
        return asyncio.ensure_future(
            asyncio.to_thread(_take, queues, children, first, max(1, join_ready))
        )

    # The next batches are taken off their queues (and unpickled, in a thread) while the
    # caller writes these ones, not after.
    pending = fetch(0)
    taken = 0
    try:
        first = await asyncio.to_thread(_first_batch, source, batch_size)
        if first is not None:
            yield first
        while True:
            items = await pending
            taken += len(items)
            last = items[-1]
            if isinstance(last, PreparedBatch):
                pending = fetch(taken)
            ready = [item for item in items if isinstance(item, PreparedBatch)]
            if ready:
                yield _joined(ready)
            if last is None:
                return
            if isinstance(last, BaseException):
                raise last
    finally:
        await _stop(children, queues, pending)


async def _stop(
    children: Sequence[BaseProcess], queues: Sequence[Any], pending: asyncio.Future[Any]
) -> None:
    """The children stopped, the fetch in flight ended, the queues closed."""
    for process in children:
        if process.is_alive():
            process.terminate()
    for process in children:
        await asyncio.to_thread(process.join, 10)
    # A fetch still waiting sees its child gone within _POLL_SECONDS; one reading a batch its
    # child was stopped in the middle of sending would wait for the rest for ever, as this
    # process holds the pipe's other end too: closed, the read ends.
    for queue_ in queues:
        queue_._writer.close()  # multiprocessing's own attribute (Python 3.11)
    with contextlib.suppress(BaseException):
        await pending
    for queue_ in queues:
        queue_.close()


def _first_batch(source: Path, batch_size: int) -> PreparedBatch | None:
    batches = prepare(source, batch_size)
    try:
        return next(batches, None)
    finally:
        batches.close()


def _start_child(path: Path, batch_size: int, queues: Sequence[Any], shard: int) -> BaseProcess:
    child = _START.Process(
        target=_child, args=(str(path), batch_size, queues[shard], shard, len(queues)),
        name=f"shelfmark-marc-prepare-{shard}", daemon=True,
    )  # fmt: skip
    with _bare_main():
        child.start()
    # A child runs at a lower priority than the importer, from its start (while it imports,
    # the importer prepares the first batch): a child is batches ahead and mostly waits for
    # room on its queue, while the importer (and its database) is what the whole import
    # waits for. At equal priority the children took CPU time from it whenever they ran,
    # where there are as many of them as CPUs.
    if child.pid is not None:
        with contextlib.suppress(OSError):
            niceness = os.getpriority(os.PRIO_PROCESS, 0) + CHILD_NICENESS
            os.setpriority(os.PRIO_PROCESS, child.pid, niceness)
    return child


def _joined(batches: Sequence[PreparedBatch]) -> PreparedBatch:
    if len(batches) == 1:
        return batches[0]
    joined = PreparedBatch()
    for batch in batches:
        joined.read += batch.read
        joined.incoming.extend(batch.incoming)
        joined.errors.extend(batch.errors)
        joined.warnings.extend(batch.warnings)
    return joined


@contextlib.contextmanager
def _bare_main() -> Iterator[None]:
    """While a child is started, a bare module stands in for `__main__`. A spawned child
    imports its parent's main module first: the `shelfmark` CLI, and with it the whole app
    (1.75 s, as long as a 10k-record file's import), or whatever script runs the import.
    A child needs nothing of it: what it runs is in this module."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def file_size(path: Path) -> int:
    """The size of the file at `path` in bytes; 0 when it cannot be read (the reader then
    says why)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0  # let the reader say what is wrong with it


def _next(batches: Any, child: BaseProcess) -> PreparedBatch | BaseException | None:
    while True:
        try:
            item: PreparedBatch | BaseException | None = batches.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            if not child.is_alive():
                return RuntimeError(
                    f"the MARC reader process stopped unexpectedly (exit code {child.exitcode})"
                )
            continue
        return item


def _take(
    queues: Sequence[Any], children: Sequence[BaseProcess], first: int, most: int
) -> list[PreparedBatch | BaseException | None]:
    """Batch `first`, waited for, then the batches after it that are already on their
    queues, up to `most` in all; the list ends early at the end (None) or at an error.

    Batch n of the children's (batch n + 1 of the file) comes from child n % shards; when
    that child has no batch n, no child has any later one."""
    shards = len(queues)
    items = [_next(queues[first % shards], children[first % shards])]
    while len(items) < most and isinstance(items[-1], PreparedBatch):
        try:
            items.append(queues[(first + len(items)) % shards].get_nowait())
        except queue.Empty:
            break
    return items


def _child(path: str, batch_size: int, batches: Any, shard: int, shards: int) -> None:
    """A child's whole life: each of its batches (from the second on: the parent prepares
    the first), then None; or the error that stopped it.

    What it imported is left out of the garbage collector's full passes (gc.freeze), as
    in the importer (marc_import._heap_frozen): they came every few batches."""
    gc.freeze()
    try:
        for batch in prepare(Path(path), batch_size, shard=shard, shards=shards, skip=1):
            batches.put(batch)
    except BaseException as exc:
        batches.put(exc)
        return
    batches.put(None)
