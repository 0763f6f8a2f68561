"""Import MARC21 into the catalog: batched, matched, never duplicating, never half-written.

A record matches an existing bib by control number (001+003), else by ISBN, else by the
fingerprint of its normalised fields — the last two only where one side has no control
number, because two records with different control numbers are different records even when
they share an ISBN (volumes of a set do). A matched record whose fields are all the same is
`unchanged`; otherwise the bib is `updated`. Unreadable records are reported by position and
skipped. Each batch is one transaction: a failure mid-file leaves whole batches behind, and
a re-import picks up where it stopped without duplicating anything.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import orjson
from sqlalchemy import ARRAY, String, Table, bindparam, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shelfmark.audit import service as audit
from shelfmark.auth.roles import Actor, require_staff
from shelfmark.cache import SEARCH_CATALOG_KEY, bib_key, invalidate
from shelfmark.catalog.models import Bib, BibIsbn, Branch, Item
from shelfmark.catalog.service import require_branch_by_code
from shelfmark.db import insert_rows, session_scope, utcnow
from shelfmark.interop.marc_map import HoldingData
from shelfmark.interop.marc_prepare import Incoming, PreparedBatch, file_size, prepared_batches
from shelfmark.search.index import bulk_indexing, index_bibs, index_prepared

BATCH_SIZE = 500
# Up to this many batches that are already prepared are written as one (see
# prepared_batches): on SQLite, every transaction rewrites each index page it touched
# (half of a 500-record batch's writing cost, at 100,000 bibs); fewer and larger ones, as
# when the importer falls behind, share them.
JOIN_READY = 4
# What a record takes in a file, on average, to estimate how many a file holds (a LoC
# record of books is 970 bytes; Koha's, with copies in 952, more).
BYTES_PER_RECORD = 1024
_BIBS = cast(Table, Bib.__table__)
_ITEMS = cast(Table, Item.__table__)
_BIB_ISBNS = cast(Table, BibIsbn.__table__)
GENERATED_BARCODE_PREFIX = "SM"
# Fields compared to tell `unchanged` from `updated`, and written on update.
_FIELDS = (
    "title", "subtitle", "contributors", "isbns", "publisher", "publication_year", "edition",
    "language", "subjects", "series", "description", "material_type", "control_number",
    "marc", "fingerprint",
)  # fmt: skip
_BIB_COLUMNS = ("id", *_FIELDS, "created_at", "updated_at")


@dataclass
class ImportSummary:
    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    items_created: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The matcher's lookups, each with one parameter holding every value: an IN list of
# hundreds of parameters cost SQLAlchemy more to render than the database to run. On
# PostgreSQL each value is looked up by its own index scan (LATERAL, kept apart by OFFSET 0):
# a table filling up during an import has no statistics yet, and the planner, guessing,
# hashed the whole table for every batch (0.3-0.5 s a batch at 200,000 bibs). Its guessed
# costs also made it JIT-compile these statements, which an import turns off (`_NO_JIT`).
_LOOKUP_PG = {
    "control": "SELECT id, control_number FROM bibs WHERE control_number = v.value OFFSET 0",
    "isbn": "SELECT bib_isbns.bib_id, bib_isbns.isbn, "
    "(SELECT control_number FROM bibs WHERE bibs.id = bib_isbns.bib_id) "
    "FROM bib_isbns WHERE bib_isbns.isbn = v.value OFFSET 0",
    "fingerprint": "SELECT id, fingerprint, control_number FROM bibs "
    "WHERE fingerprint = v.value OFFSET 0",
}
_LOOKUP_SQLITE = {
    "control": "SELECT id, control_number FROM bibs WHERE control_number IN {values}",
    "isbn": "SELECT bib_isbns.bib_id, bib_isbns.isbn, bibs.control_number FROM bib_isbns "
    "JOIN bibs ON bibs.id = bib_isbns.bib_id WHERE bib_isbns.isbn IN {values}",
    "fingerprint": "SELECT id, fingerprint, control_number FROM bibs WHERE fingerprint IN {values}",
}
_LOOKUPS_PG = {
    name: text(
        f"SELECT found.* FROM unnest(CAST(:values AS varchar[])) AS v(value) "  # noqa: S608
        f"CROSS JOIN LATERAL ({sql}) AS found"
    ).bindparams(bindparam("values", type_=ARRAY(String)))
    for name, sql in _LOOKUP_PG.items()
}
_NO_JIT = text("SET LOCAL jit = off")
_LOOKUPS_SQLITE = {
    name: text(sql.format(values="(SELECT value FROM json_each(:values))"))
    for name, sql in _LOOKUP_SQLITE.items()
}


class _Matcher:
    """Finds the bib a record is a new version of, among stored and earlier batch records."""

    def __init__(self) -> None:
        self.by_control: dict[str, int] = {}
        self.by_isbn: dict[str, int] = {}
        self.by_fingerprint: dict[str, int] = {}
        self.control_of: dict[int, str | None] = {}

    async def load(self, session: AsyncSession, incoming: Sequence[Incoming]) -> None:
        controls = {i.values["control_number"] for i in incoming} - {None}
        isbns = {isbn for i in incoming for isbn in i.values["isbns"]}
        prints = {i.values["fingerprint"] for i in incoming}
        postgresql = session.get_bind().dialect.name == "postgresql"
        statements = _LOOKUPS_PG if postgresql else _LOOKUPS_SQLITE
        if postgresql:
            await session.execute(_NO_JIT)

        async def lookup(name: str, values: set[str]) -> list[Any]:
            if not values:
                return []
            wanted = sorted(values)
            param = wanted if postgresql else orjson.dumps(wanted).decode()
            return list(await session.execute(statements[name], {"values": param}))

        for bib_id, control in await lookup("control", controls):
            self.remember(bib_id, control=control)
        # Sorted here: asked to sort by bib id, PostgreSQL walked the whole (bib_id, isbn)
        # primary key instead of looking the ISBNs up (0.4 s a batch at 100,000 bibs).
        for bib_id, isbn, control in sorted(await lookup("isbn", isbns)):
            self.remember(bib_id, control=control, isbns=[isbn])
        for bib_id, fingerprint, control in sorted(await lookup("fingerprint", prints)):
            self.remember(bib_id, control=control, fingerprint=fingerprint)

    def remember(
        self, bib_id: int, *, control: str | None, isbns: Iterable[str] = (),
        fingerprint: str | None = None,
    ) -> None:  # fmt: skip
        self.control_of[bib_id] = control
        if control:
            self.by_control.setdefault(control, bib_id)
        for isbn in isbns:
            self.by_isbn.setdefault(isbn, bib_id)
        if fingerprint:
            self.by_fingerprint.setdefault(fingerprint, bib_id)

    def match(self, values: dict[str, Any]) -> int | None:
        control = values["control_number"]
        if control and control in self.by_control:
            return self.by_control[control]
        candidates = [self.by_isbn.get(isbn) for isbn in values["isbns"]]
        candidates.append(self.by_fingerprint.get(values["fingerprint"]))
        for bib_id in candidates:
            if bib_id is None:
                continue
            stored = self.control_of.get(bib_id)
            if not control or not stored or stored == control:
                return bib_id
        return None


async def import_batch(
    session: AsyncSession,
    *,
    actor: Actor,
    batch: PreparedBatch,
    summary: ImportSummary,
    items_branch: str | None = None,
    matcher: _Matcher | None = None,
    known_terms: set[str] | None = None,
) -> None:
    """Import one prepared batch in the session's transaction (the caller commits).

    `known_terms` carries the search vocabulary already written from one batch to the next
    (see `index_prepared`)."""
    require_staff(actor)
    summary.read += batch.read
    summary.errors.extend(batch.errors)
    summary.warnings.extend(batch.warnings)
    incoming = batch.incoming
    if not incoming:
        return
    matcher = matcher or _Matcher()
    await matcher.load(session, incoming)

    new_rows: list[Incoming] = []
    changed: dict[int, Incoming] = {}
    for record in incoming:
        bib_id = matcher.match(record.values)
        if bib_id is None:
            new_rows.append(record)
            # A later record of the same batch must match this one: a negative id stands in.
            matcher.remember(
                -len(new_rows), control=record.values["control_number"],
                isbns=record.values["isbns"], fingerprint=record.values["fingerprint"],
            )  # fmt: skip
        elif bib_id < 0:
            summary.unchanged += 1  # the same record twice in one file
        else:
            changed[bib_id] = record

    await _apply_updates(session, changed, summary)
    created = await _insert_new(session, new_rows, known_terms)
    summary.created += len(created)
    await _insert_items(session, created, summary, items_branch)


async def _apply_updates(
    session: AsyncSession, changed: dict[int, Incoming], summary: ImportSummary
) -> None:
    if not changed:
        return
    columns = [getattr(Bib, name) for name in _FIELDS]
    stored = {
        row.id: row._mapping
        for row in await session.execute(select(Bib.id, *columns).where(Bib.id.in_(changed)))
    }
    updates = []
    for bib_id, record in changed.items():
        old = stored[bib_id]
        if all(old[name] == record.values[name] for name in _FIELDS):
            summary.unchanged += 1
        else:
            updates.append({"id": bib_id, **record.values, "updated_at": utcnow()})
    if updates:
        await session.execute(update(Bib), updates)
        await _index_isbns(session, [(u["id"], u["isbns"]) for u in updates], replace=True)
        await index_bibs(session, [u["id"] for u in updates])
        invalidate(session, [bib_key(u["id"]) for u in updates])
        summary.updated += len(updates)


async def _insert_new(
    session: AsyncSession, new_rows: Sequence[Incoming], known_terms: set[str] | None
) -> list[tuple[int, Incoming]]:
    if not new_rows:
        return []
    now = utcnow()
    ids = await _allocate_ids(session, len(new_rows))
    created = list(zip(ids, new_rows, strict=True))
    # The database's bulk path, not the ORM's bulk insert: the rows are complete, and the
    # ORM's (and Core's) per-row bookkeeping for them cost more than the writing.
    rows = [(bib_id, *[r.values[name] for name in _FIELDS], now, now) for bib_id, r in created]
    await insert_rows(session, _BIBS, _BIB_COLUMNS, rows)
    await _index_isbns(session, [(bib_id, r.values["isbns"]) for bib_id, r in created])
    await index_prepared(
        session, [(bib_id, r.search) for bib_id, r in created], known_terms=known_terms
    )
    return created


async def _allocate_ids(session: AsyncSession, count: int) -> list[int]:
    """Ids for `count` new bibs, taken before the insert so that it can be one executemany.

    (INSERT … RETURNING in parameter order made SQLAlchemy send one statement per row on
    SQLite: 8 of the 17 seconds of a 10,000-record import.) PostgreSQL hands out the ids from
    the table's sequence; SQLite, which has one writer at a time, continues from the largest
    id once this transaction holds the write lock.
    """
    if session.bind is not None and session.get_bind().dialect.name == "postgresql":
        sequence = select(func.nextval(func.pg_get_serial_sequence("bibs", "id"))).select_from(
            func.generate_series(1, count)
        )
        return list((await session.scalars(sequence)).all())
    # A write that changes nothing still takes SQLite's write lock, so that no other writer
    # can take the same ids between the SELECT and the INSERT.
    await session.execute(update(Bib).where(Bib.id == -1).values(title=Bib.title))
    start = (await session.scalar(select(func.max(Bib.id)))) or 0
    return list(range(start + 1, start + 1 + count))


async def _index_isbns(
    session: AsyncSession, pairs: Sequence[tuple[int, list[str]]], *, replace: bool = False
) -> None:
    if replace:
        await session.execute(
            delete(BibIsbn).where(BibIsbn.bib_id.in_([bib_id for bib_id, _ in pairs]))
        )
    rows = [(bib_id, isbn) for bib_id, isbns in pairs for isbn in isbns]
    await insert_rows(session, _BIB_ISBNS, ("bib_id", "isbn"), rows)


async def _insert_items(
    session: AsyncSession,
    created: Sequence[tuple[int, Incoming]],
    summary: ImportSummary,
    items_branch: str | None,
) -> None:
    """Copies for newly created bibs: from 952/852, or one generated copy per record at
    `items_branch` when the record describes none."""
    copies: list[tuple[Incoming, HoldingData]] = []
    bib_of: dict[int, int] = {}
    for bib_id, record in created:
        holdings = record.holdings
        if not holdings and items_branch:
            barcode = f"{GENERATED_BARCODE_PREFIX}{bib_id:09d}"
            holdings = (HoldingData(barcode, items_branch, None, None, None),)
        for holding in holdings:
            bib_of[id(holding)] = bib_id
            copies.append((record, holding))
    if not copies:
        return
    branches = dict((await session.execute(select(Branch.code, Branch.id))).all())
    barcodes = {h.barcode for _, h in copies if h.barcode}
    taken: set[str] = set()
    if barcodes:
        query = select(Item.barcode).where(Item.barcode.in_(barcodes))
        taken = set((await session.scalars(query)).all())
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for record, holding in copies:
        problem = _holding_problem(holding, branches, taken)
        if problem:
            summary.warnings.append({
                "index": record.index, "control_number": record.values["control_number"],
                "reason": problem,
            })  # fmt: skip
            continue
        assert holding.barcode is not None
        assert holding.branch is not None
        taken.add(holding.barcode)
        rows.append({
            "bib_id": bib_of[id(holding)], "barcode": holding.barcode,
            "branch_id": branches[holding.branch], "shelfmark": holding.call_number,
            "item_type": holding.item_type or "book", "price": holding.price,
            "status": "available", "created_at": now, "updated_at": now,
        })  # fmt: skip
    if rows:
        await session.execute(insert(_ITEMS), rows)
        invalidate(session, [SEARCH_CATALOG_KEY])  # Core rows: the ORM's flush hook sees none
        summary.items_created += len(rows)


def _holding_problem(holding: HoldingData, branches: dict[str, int], taken: set[str]) -> str | None:
    if not holding.barcode:
        return "a copy without a barcode was skipped"
    if holding.barcode in taken:
        return f"barcode {holding.barcode!r} is already in use; that copy was skipped"
    if not holding.branch or holding.branch not in branches:
        return f"copy {holding.barcode!r} names an unknown branch {holding.branch!r}; skipped"
    return None


async def import_file(
    maker: async_sessionmaker[AsyncSession],
    source: Path | BinaryIO,
    *,
    actor: Actor,
    items_branch: str | None = None,
    on_progress: Callable[[ImportSummary], None] | None = None,
    batch_size: int = BATCH_SIZE,
    expected: int | None = None,
) -> ImportSummary:
    """Stream a MARC file into the catalog, one transaction per batch (batches already
    prepared when one is taken are joined to it, up to JOIN_READY); audited once.
    `expected` is how many records the file holds, if known (else estimated from its size):
    a large import into a small catalog builds the search index at its end (bulk_indexing).

    Raises MarcFileError (before writing anything) when the file cannot be read as MARC,
    and BranchNotFound when `items_branch` names no branch.
    """
    require_staff(actor)
    if items_branch:
        async with session_scope(maker) as session:
            await require_branch_by_code(session, items_branch)
    summary = ImportSummary()
    known_terms: set[str] = set()
    if expected is None:
        expected = _expected_records(source)
    with _heap_frozen():
        # Closed at once when a batch fails: its children stop then, not when the
        # generator is collected.
        batches = prepared_batches(source, batch_size, join_ready=JOIN_READY)
        async with contextlib.aclosing(batches):
            # The first batch is read before the index is touched: a file that is not MARC
            # fails here, having changed nothing.
            first = await anext(batches, None)
            async with bulk_indexing(maker, expected=expected):
                batch = first
                while batch is not None:
                    async with session_scope(maker) as session:
                        await import_batch(
                            session, actor=actor, batch=batch, summary=summary,
                            items_branch=items_branch, known_terms=known_terms,
                        )  # fmt: skip
                    if on_progress:
                        on_progress(summary)
                    batch = await anext(batches, None)
    async with session_scope(maker) as session:
        name = source.name if isinstance(source, Path) else getattr(source, "name", "upload")
        await audit.record(
            session, actor=actor, action="marc.import", object_type="import", object_id=None,
            changes={"file": str(name), "read": summary.read, "created": summary.created,
                     "updated": summary.updated, "unchanged": summary.unchanged,
                     "items_created": summary.items_created, "errors": len(summary.errors)},
        )  # fmt: skip
    return summary


def _expected_records(source: Path | BinaryIO) -> int:
    """About how many records `source` holds, from its size (0 for a stream)."""
    return file_size(source) // BYTES_PER_RECORD if isinstance(source, Path) else 0


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """The objects that exist before an import (the app, SQLAlchemy's) are left out of the
    garbage collector's full passes until it ends (gc.freeze). An import makes and drops
    thousands of containers a batch, which set off a full pass every few batches: over the
    whole heap, they cost 15 µs a record, most of the work of unpickling a batch.

    A process that froze its heap already (a server: `app.settle_memory`) is left as it is:
    unfreezing would undo its freeze too."""
    global _IMPORTS_RUNNING, _IMPORTS_FROZE  # noqa: PLW0603 - one count for the process
    if not _IMPORTS_RUNNING:
        _IMPORTS_FROZE = gc.get_freeze_count() == 0
        if _IMPORTS_FROZE:
            gc.freeze()
    _IMPORTS_RUNNING += 1
    try:
        yield
    finally:
        _IMPORTS_RUNNING -= 1
        if not _IMPORTS_RUNNING and _IMPORTS_FROZE:  # the last one out (side by side)
            gc.unfreeze()


_IMPORTS_RUNNING = 0
_IMPORTS_FROZE = False
