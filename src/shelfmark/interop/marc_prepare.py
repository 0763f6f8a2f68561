"""The CPU half of a MARC import — read, map, fingerprint, fold for search — in batches, and
for a file of any size in a child process, so that it runs beside the database writes.

Parsing and mapping a record costs about as much as writing it; on one process the import
ran at the sum of the two. A child process that prepares batch n + 1 while the importer
writes batch n makes it run at the larger of the two (bench/marc_import.py). The child
imports only this module's light dependencies (no SQLAlchemy, no app), so that it starts in
a fraction of a second; a small file or an open stream is prepared in process instead.

What crosses between the processes is plain data (dicts, tuples, bytes), at most
`QUEUE_BATCHES` batches ahead, so that memory stays flat however long the file.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, BinaryIO

from shelfmark.interop.marc_map import BibData, HoldingData, map_holdings, map_record
from shelfmark.interop.marc_read import ReadResult, iter_marc
from shelfmark.search.text import IndexRow, index_row

QUEUE_BATCHES = 4
CHILD_MIN_BYTES = 4 * 1024 * 1024  # below this a child costs more than it saves
_POLL_SECONDS = 1.0
_START = multiprocessing.get_context("spawn")  # never fork a process that runs threads


@dataclass(frozen=True, slots=True)
class Incoming:
    """A record ready to be written: its `bibs` row, its copies and its search row."""

    index: int
    values: dict[str, Any]
    holdings: tuple[HoldingData, ...]
    search: IndexRow


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
    batch = PreparedBatch(read=len(results))
    for result in results:
        if result.record is None:
            batch.errors.append(
                {"index": result.index, "control_number": result.control_number,
                 "reason": result.error or "unreadable record"}
            )  # fmt: skip
            continue
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
            continue
        for warning in (*result.warnings, *data.warnings):
            batch.warnings.append(
                {"index": result.index, "control_number": data.control_number, "reason": warning}
            )
        batch.incoming.append(Incoming(result.index, values, holdings, search))
    return batch


def prepare(source: Path | BinaryIO, batch_size: int) -> Iterator[PreparedBatch]:
    """Prepared batches of `source`, in this process. Raises MarcFileError, before yielding
    anything, when the file cannot be read as MARC."""
    results = iter_marc(source)
    while True:
        chunk: list[ReadResult] = []
        for result in results:
            chunk.append(result)
            if len(chunk) == batch_size:
                break
        if not chunk:
            return
        yield prepare_batch(chunk)


async def prepared_batches(
    source: Path | BinaryIO, batch_size: int
) -> AsyncIterator[PreparedBatch]:
    """Prepared batches of `source`: from a child process for a file worth one, else from
    this process. The child is stopped when the caller stops early (or fails)."""
    if not isinstance(source, Path) or _size(source) < CHILD_MIN_BYTES:
        for batch in prepare(source, batch_size):
            yield batch
        return
    batches: Any = _START.Queue(maxsize=QUEUE_BATCHES)
    child = _START.Process(
        target=_child, args=(str(source), batch_size, batches), name="shelfmark-marc-prepare",
        daemon=True,
    )  # fmt: skip
    child.start()
    try:
        while True:
            item = await asyncio.to_thread(_next, batches, child)
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if child.is_alive():
            child.terminate()
        await asyncio.to_thread(child.join, 10)
        batches.close()


def _size(path: Path) -> int:
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


def _child(path: str, batch_size: int, batches: Any) -> None:
    """The child's whole life: every batch, then None; or the error that stopped it."""
    try:
        for batch in prepare(Path(path), batch_size):
            batches.put(batch)
    except BaseException as exc:
        batches.put(exc)
        return
    batches.put(None)
