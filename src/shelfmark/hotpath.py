"""The desk's hot path: statements run on the driver's own connection, ORM instances loaded
from their rows, and rows written without SQLAlchemy's unit of work.

A checkout and a checkin run about a dozen statements between them. Through the ORM each
cost 280-400 µs of CPU, and a flush of one changed row about 1 ms; run by `rows`, a
statement costs about 30 µs, asyncpg's own 25 (measured in one process on the same
statements; the database's work is the same). So, on PostgreSQL:

- `rows` runs a module-level Core statement (SELECT, or INSERT/UPDATE with or without
  RETURNING), compiled once by SQLAlchemy, on the asyncpg connection, inside the session's
  transaction (begun first if need be), with the columns' own bind processing (JSON, UTC
  times) applied. Elsewhere it runs through Core.
- `Loader` selects a model's columns and makes an instance of a row, taken into the session
  as if a query had loaded it.
- `write` writes rows (`updating` a loaded instance's, `inserting` new ones) in one
  statement, and sets the updated values on their instances as committed: nothing is left
  for the flush. Code that watches writes to a table (the search cache) says so with
  `on_update`, as the flush's events do not see these.

The statements stay SQLAlchemy's (no SQL is written by hand), the rules stay in the
services; only the way a statement reaches the database changes.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import (
    CTE,
    Column,
    Insert,
    Table,
    Update,
    bindparam,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.attributes import instance_state, set_committed_value
from sqlalchemy.sql import ClauseElement, ColumnElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.schema import CallableColumnDefault

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement as the driver takes it: its SQL, and how to make its positional
    arguments from the named parameters."""

    statement: object  # kept: its id() is this entry's key, and must not be reused
    sql: str
    names: tuple[str, ...]
    defaults: Mapping[str, Any]  # the values of the statement's own literal binds
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        defaults = self.defaults
        values = [params[n] if n in params else defaults[n] for n in self.names]
        for position, processor in self.processors:
            if values[position] is not None:
                values[position] = processor(values[position])
        return values


_COMPILED: dict[tuple[int, tuple[str, ...]], Compiled] = {}
_DRIVER = "hotpath.driver"  # in session.info: (transaction, dialect, adapted, asyncpg's)


def compiled(statement: Executable, dialect: Dialect, params: Mapping[str, Any]) -> Compiled:
    """Compiled once per statement object and set of parameter names (an INSERT or UPDATE
    sets the columns it is given): statements built once (module-level, or cached) are
    compiled once; a statement built per call would be compiled per call, and kept."""
    key = (id(statement), tuple(params))
    found = _COMPILED.get(key)
    if found is not None and found.statement is statement:
        return found
    sql = cast(
        SQLCompiler,
        cast(ClauseElement, statement).compile(dialect=dialect, column_keys=list(params)),
    )
    if sql.post_compile_params:
        # An IN of a Python list: its SQL depends on the list's length. Give constant lists
        # as literal() elements, and bind variable lists as one array.
        raise TypeError(f"A statement for the driver has an expanding IN: {sql.string}")
    if sql.insert_prefetch or sql.update_prefetch:
        # Python-side defaults are computed by SQLAlchemy's execution, which this skips.
        raise TypeError(f"A statement for the driver must be given every value: {sql.string}")
    names = tuple(sql.positiontup or ())
    binds = [sql.binds[name] for name in names]
    defaults = {n: b.effective_value for n, b in zip(names, binds, strict=True) if not b.required}
    processors = tuple(
        (position, processor)
        for position, bind in enumerate(binds)
        if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
    )
    found = _COMPILED[key] = Compiled(statement, sql.string, names, defaults, processors)
    return found


async def rows(
    session: AsyncSession, statement: Executable, params: Mapping[str, Any]
) -> Sequence[Mapping[str, Any]]:
    """Run a module-level statement in the session's transaction; its rows as mappings
    (none for a write without RETURNING). Errors are SQLAlchemy's, as through the ORM: a
    violated constraint raises `IntegrityError`, its `.orig` the DB-API error caused by
    asyncpg's.

    On PostgreSQL the rows are asyncpg's records: values as the driver decodes them (aware
    UTC datetimes, decoded JSON), with no result processing of SQLAlchemy's; use it only for
    columns that need none.
    """
    on_driver = await driver_of(session)
    if on_driver is None:
        connection = await session.connection()
        result = await connection.execute(statement, dict(params))
        return (
            cast("Sequence[Mapping[str, Any]]", result.mappings().all())
            if result.returns_rows
            else ()
        )
    dialect, adapted, driver = on_driver
    found = compiled(statement, dialect, params)
    arguments = found.arguments(params)
    try:
        records: Sequence[Mapping[str, Any]] = await driver.fetch(found.sql, *arguments)
    except Exception as exc:
        raise _translated(exc, found.sql, arguments, dialect, adapted) from exc
    return records


async def driver_of(session: AsyncSession) -> tuple[Dialect, Any, Any] | None:
    """On PostgreSQL, the session's dialect, SQLAlchemy's adapted connection and asyncpg's
    connection under it, with the session's transaction begun on it; None elsewhere."""
    # The innermost transaction: a savepoint is sent when its transaction first asks the
    # session for its connection, so each transaction (nested or not) asks once.
    transaction = _innermost(session)
    cached = session.info.get(_DRIVER)
    if cached is not None and cached[0] is transaction:
        _, dialect, adapted, driver = cached
    else:
        dialect = session.get_bind().dialect
        if dialect.name != "postgresql":
            return None
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        adapted, driver = raw.dbapi_connection, raw.driver_connection
        # Kept for the transaction's next statements (a new transaction, after a commit
        # or a rollback, may have another connection).
        transaction = _innermost(session)
        session.info[_DRIVER] = (transaction, dialect, adapted, driver)
    # SQLAlchemy begins a transaction with the connection's first statement; what runs on
    # the driver does not pass through it, so it is begun the same way first (a pinned
    # private method: tests/test_hotpath.py holds the statements to the transaction).
    if adapted._transaction is None:
        await adapted._start_transaction()
    return dialect, adapted, driver


def _innermost(session: AsyncSession) -> object:
    """The session's innermost transaction: the sync session's own (the async session's
    accessors wrap it in a proxy, which costs more than the rest of a lookup)."""
    sync = session.sync_session
    return sync.get_nested_transaction() or sync.get_transaction()


def dialect_name(session: AsyncSession) -> str:
    """The name of the session's database's dialect, without the async session's proxies."""
    bind = session.bind
    return (bind if bind is not None else session.get_bind()).dialect.name


def _translated(
    error: Exception, sql: str, arguments: list[Any], dialect: Dialect, adapted: Any
) -> Exception:
    """The exception SQLAlchemy raises for `error` from asyncpg: its DB-API error (the
    adapter's translation, caused by asyncpg's), wrapped as `IntegrityError`,
    `OperationalError`… with `.orig`, and marked when the connection is gone."""
    try:
        adapted._handle_exception(error)  # raises the DB-API error
    except Exception as dbapi_error:
        translated = dbapi_error
    dbapi = dialect.loaded_dbapi
    if not isinstance(translated, dbapi.Error):
        return translated
    gone = dialect.is_disconnect(translated, None, None)
    return DBAPIError.instance(
        sql, arguments, translated, dbapi.Error, dialect=dialect, connection_invalidated=gone
    )


class Loader(Generic[M]):
    """A model's columns for a Core select (labelled with `prefix`, so that a join can
    select two models), and the instance of a row of them in the session, as a query
    would make it: with `refresh`, as with `populate_existing` (an instance the session
    holds already is given the row's values), else as without (it keeps its own, changed
    or not). A new instance joins the session persistent, with nothing to flush."""

    def __init__(self, model: type[M], *, prefix: str = "", refresh: bool = True) -> None:
        self.model = model
        self._refresh = refresh
        mapper: Mapper[Any] = inspect(model)
        self._mapper = mapper
        self._new = mapper.class_manager.new_instance
        self._identity_class = mapper._identity_class
        self._primary_key = tuple(
            prefix + mapper.get_property_by_column(c).key for c in mapper.primary_key
        )
        self._keys = tuple((a.key, prefix + a.key) for a in mapper.column_attrs)
        self._names = tuple(name for name, _ in self._keys)
        self._values = operator.itemgetter(*(label for _, label in self._keys))
        self.columns: tuple[ColumnElement[Any], ...] = tuple(
            a.columns[0].label(prefix + a.key) for a in mapper.column_attrs
        )

    def instance(self, session: AsyncSession, row: Mapping[str, Any], **related: object) -> M:
        """The row's instance in the session, with `related` instances (loaded already) set
        as its loaded relationships. The row must hold every column: a missing one would
        be expired, and loading it later is an error in async code."""
        key = (self._identity_class, tuple(row[k] for k in self._primary_key), None)
        held = session.identity_map.get(key)
        if held is not None:
            if self._refresh:
                for name, label in self._keys:
                    set_committed_value(held, name, row[label])
                relate(held, **related)
            return cast(M, held)
        # As the ORM's loading makes one: no constructor, no attribute events, and none of
        # `session.add`'s cascade (which cost more than the rest): persistent in the identity
        # map with its values as loaded. (No load event is fired: it is not a query's.)
        instance = self._new()
        values = instance.__dict__
        values.update(zip(self._names, self._values(row), strict=True))
        values.update(related)
        state = instance_state(instance)
        state.key = key
        state.identity_token = None
        sync = session.sync_session
        state.session_id = sync.hash_key
        sync.identity_map._add_unpresent(state, key)
        return cast(M, instance)


def relate(instance: object, **related: object) -> None:
    """Set relationships of a loaded instance to instances already loaded, as a loader
    would: the row does not change, so there is nothing for the flush to do."""
    for name, value in related.items():
        set_committed_value(instance, name, value)


@dataclass(frozen=True, slots=True, eq=False)
class Write:
    """A row for `write` to write: an UPDATE of a loaded instance's row (`updating`) or an
    INSERT (`inserting`)."""

    table: Table
    values: Mapping[str, Any]  # by column key; a value may be a `KeyOf` an earlier write
    instance: object | None = None  # an update's: its primary key, then the values set on it
    primary_key: Any = None
    keyed: bool = False  # an insert whose primary key `write` returns


@dataclass(frozen=True, slots=True)
class KeyOf:
    """As a value of a write: the primary key of the row that an earlier, keyed write of
    the same `write` inserts (as the column's type: an id in a text column is its text)."""

    write: Write


def updating(instance: object, values: Mapping[str, Any]) -> Write:
    """Set `values` (column attributes) on the instance's row, and the columns that set
    themselves on every update (`updated_at`)."""
    model = type(instance)
    found = _UPDATED_TABLES.get(model)
    if found is None:
        found = _UPDATED_TABLES[model] = _updated_table(model)
    table, primary_key, self_updating = found
    values = dict(values)
    for key, default in self_updating:
        values.setdefault(key, default(None))
    return Write(table, values, instance, instance.__dict__[primary_key])


def inserting(table: Table, values: Mapping[str, Any], *, keyed: bool = False) -> Write:
    """A new row: every column it needs a value for is in `values` (no Python defaults).
    `keyed`: its primary key, made by the database, is wanted (`write` returns it, and a
    later write may name it as a `KeyOf` this one)."""
    return Write(table, values, keyed=keyed)


async def write(session: AsyncSession, *writes: Write) -> list[Any]:
    """Write the rows now, in one statement on PostgreSQL (each in a WITH clause of the
    last: one round trip, for the database too, instead of one each), one by one elsewhere;
    then set each update's values on its instance as committed, leaving the instance
    nothing for the flush to write. The rows must be distinct (PostgreSQL runs the parts of
    one statement on one snapshot, in no set order; only a `KeyOf` orders two of them).
    Returns the primary keys of the keyed inserts, in order."""
    shape, params = _shape_of(writes)
    keys: list[Any] = []
    if dialect_name(session) == "postgresql":
        found = await rows(session, _combined(shape), params)
        if any(w.keyed for w in writes):
            keys = list(found[0].values())
    else:
        made: dict[int, Any] = {}
        for n, part in enumerate(_parts(shape)):
            params.update((f"w{n}_{key}", made[m]) for key, m in shape[n][3])
            found = await rows(session, part, params)
            if writes[n].keyed:
                made[n] = found[0]["key"]
                keys.append(made[n])
    for w in writes:
        if w.instance is not None:
            _committed(session, w)
    return keys


def _shape_of(writes: Sequence[Write]) -> tuple[_Shape, dict[str, Any]]:
    """The writes' shape (what their statement is built from) and their parameters."""
    params: dict[str, Any] = {}
    shape = []
    position: dict[int, int] | None = None
    for n, w in enumerate(writes):
        refs = []
        for key, value in w.values.items():
            if value.__class__ is KeyOf:
                if position is None:
                    position = {id(other): m for m, other in enumerate(writes)}
                m = position.get(id(value.write), n)
                if m >= n or not writes[m].keyed:
                    raise ValueError(f"write {n} names the key of no earlier keyed write")
                refs.append((key, m))
            else:
                params[f"w{n}_{key}"] = value
        if w.instance is not None:
            params[f"w{n}_pk"] = w.primary_key
        shape.append((w.table, tuple(w.values), w.instance is not None, tuple(refs), w.keyed))
    return tuple(shape), params


def _committed(session: AsyncSession, w: Write) -> None:
    """An update's values set on its instance as committed, after its listeners heard."""
    listeners = _UPDATE_LISTENERS.get(w.table)
    if listeners:
        held = w.instance.__dict__
        changes = {
            key: (held.get(key), value) for key, value in w.values.items() if held.get(key) != value
        }
        for listener in listeners:
            listener(session, w.instance, changes)
    # As set_committed_value for each (the ORM's own way of setting a loaded value), once.
    state = instance_state(w.instance)
    state.dict.update(w.values)
    state._commit(state.dict, list(w.values))


UpdateListener = Callable[[AsyncSession, object, Mapping[str, tuple[Any, Any]]], None]
_UPDATE_LISTENERS: dict[Table, list[UpdateListener]] = {}


def on_update(table: Table, listener: UpdateListener) -> None:
    """Have `write` call `listener(session, instance, changes)` after it updates a row of
    `table`, with `changes` = {key: (before, after)} for the values it changed: what the
    ORM's flush events would have seen (they see nothing of the hot path's writes)."""
    _UPDATE_LISTENERS.setdefault(table, []).append(listener)


# Per write: its table, the keys of its values, whether an update, which values are the key
# of which earlier write, whether keyed.
_Shape = tuple[tuple[Table, tuple[str, ...], bool, tuple[tuple[str, int], ...], bool], ...]


# A write's value that is the key of write m, as SQL: given (n, key, m).
_KeyOf = Callable[[int, str, int], ColumnElement[Any]]


def _statement(shape: _Shape, n: int, key_of: _KeyOf) -> Insert | Update:
    """Write `n` of a shape, its parameters named `w{n}_{key}` (and `w{n}_pk` for an
    update's primary key); a value that is a key made by write `m` is `key_of(n, key, m)`."""
    table, keys, is_update, refs, keyed = shape[n]
    values: dict[str, Any] = {
        key: bindparam(f"w{n}_{key}", type_=table.c[key].type) for key in keys
    }
    for key, m in refs:
        values[key] = cast_(key_of(n, key, m), table.c[key].type)
    (primary_key,) = table.primary_key.columns
    if is_update:
        where = primary_key == bindparam(f"w{n}_pk", type_=primary_key.type)
        return update(table).where(where).values(values)
    statement = insert(table).values(values)
    return statement.returning(primary_key.label("key")) if keyed else statement


@functools.cache
def _parts(shape: _Shape) -> tuple[Executable, ...]:
    """The statements of a shape of writes, to run one by one (a key made by an earlier one
    is bound: `write` knows it by then)."""
    return tuple(
        _statement(shape, n, lambda n, key, m: bindparam(f"w{n}_{key}")) for n in range(len(shape))
    )


@functools.cache
def _combined(shape: _Shape) -> Executable:
    """The writes in one statement: each in a WITH clause of the last, or, if keys are
    wanted, of a SELECT of them (a key named by a later write is read from its clause)."""
    ctes: list[CTE] = []

    def key_of(n: int, key: str, m: int) -> ColumnElement[Any]:
        return select(ctes[m].c.key).scalar_subquery()

    keyed = [n for n, entry in enumerate(shape) if entry[4]]
    last = len(shape) if keyed else len(shape) - 1
    for n in range(last):  # one by one: a clause may read an earlier one's key
        ctes.append(_statement(shape, n, key_of).cte(f"w{n}"))  # noqa: PERF401
    if keyed:
        return select(*(key_of(-1, "", n).label(f"k{n}") for n in keyed)).add_cte(*ctes)
    return _statement(shape, last, key_of).add_cte(*ctes)


_UpdatedTable = tuple[Table, str, tuple[tuple[str, Callable[[Any], Any]], ...]]
_UPDATED_TABLES: dict[type, _UpdatedTable] = {}


def _updated_table(model: type) -> _UpdatedTable:
    """A model's table, the attribute of its primary key (a loaded instance holds it), and
    the columns that set themselves on every UPDATE (`onupdate=utcnow`)."""
    mapper: Mapper[Any] = inspect(model)
    table = cast(Table, mapper.local_table)
    # `write` names a value's column and attribute by one key (and sets the attribute in
    # the instance's dict): the two must be the same.
    renamed = [a.key for a in mapper.column_attrs if a.columns[0].key != a.key]
    if renamed:
        raise TypeError(f"{model.__name__} maps columns under other names: {renamed}")
    (primary_key,) = mapper.primary_key
    self_updating = tuple(
        (column.key, column.onupdate.arg)
        for column in cast("list[Column[Any]]", list(table.columns))
        if isinstance(column.onupdate, CallableColumnDefault)
    )
    return table, mapper.get_property_by_column(primary_key).key, self_updating
