"""Hot reads on the driver's cursor, with SQL that SQLAlchemy rendered.

The stack reads the store on every show and list, to give the captured
keys back.  Around such a short query SQLAlchemy Core spends several
times the query's own time (cache key, execution context, events,
result object, the expanding ``IN`` rendered anew): on a show that is
most of what the stack adds (the benchmarks page has the figures).  For
these few fixed reads SQLAlchemy still
does what it is good at, rendering the statement for the dialect (once
per dialect and shape), the pool with its checkout checks, and its error
classes, and the rendered SQL runs on the cursor of a pooled connection.

Everything else (writes, ORM transactions, rarer reads) stays on Core and
the ORM.  A read here is one statement in autocommit (SQLite, the
PostgreSQL reading twin) or followed by the pool's rollback (MySQL): it
sees one consistent snapshot, as before.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from instance_aware.store import errors

#: What a shape builds: a SELECT of any columns.
Statement: TypeAlias = 'sa.Select[*tuple[Any, ...]]'


@dataclasses.dataclass(frozen=True)
class Rendered:
    """A statement rendered for one dialect."""

    sql: str
    #: Bind names in order for positional paramstyles (``qmark``,
    #: ``format``), ``None`` for named ones (``pyformat``, ``named``).
    order: tuple[str, ...] | None

    @classmethod
    def of(cls, statement: Statement, dialect: sa.Dialect) -> Rendered:
        compiled = statement.compile(dialect=dialect)
        order = (tuple(compiled.positiontup or ())
                 if compiled.positional else None)
        return cls(compiled.string, order)

    def parameters(self, values: Mapping[str, Any]
                   ) -> Sequence[Any] | Mapping[str, Any]:
        if self.order is None:
            return values
        return tuple(values[name] for name in self.order)


class Shapes:
    """A statement family: one statement per shape, rendered per dialect.

    ``build(shape)`` returns the statement of a shape (for instance the
    number of ids of an ``IN`` list, each its own bind parameter); it is
    built and rendered once per dialect and shape.
    """

    def __init__(self, build: Callable[[Any], Statement],
                 max_shapes: int = 1024) -> None:
        self._build = build
        self.rendered = functools.lru_cache(maxsize=max_shapes)(self._render)

    def _render(self, dialect: sa.Dialect, shape: Any) -> Rendered:
        return Rendered.of(self._build(shape), dialect)


def rows(engine: sa.Engine, shapes: Shapes, shape: Any,
         values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """All rows of ``shapes``' statement of ``shape`` bound to ``values``.

    Errors are SQLAlchemy's (a lost connection invalidates it, as
    SQLAlchemy does), mapped to the store's
    (:func:`instance_aware.store.errors.translated`).
    """
    rendered = shapes.rendered(engine.dialect, shape)
    dbapi_error = engine.dialect.loaded_dbapi.Error
    with errors.translated():
        try:
            connection = engine.raw_connection()
        except dbapi_error as exc:  # the pool raises the driver's own
            raise sa_exc.DBAPIError.instance(
                None, None, exc, dbapi_error,
                dialect=engine.dialect) from exc
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(rendered.sql, rendered.parameters(values))
                return list(cursor.fetchall())
            finally:
                cursor.close()
        except dbapi_error as exc:
            lost = engine.dialect.is_disconnect(
                exc, connection.dbapi_connection, None)
            if lost:
                connection.invalidate(exc)
            raise sa_exc.DBAPIError.instance(
                rendered.sql, None, exc, dbapi_error,
                connection_invalidated=lost,
                dialect=engine.dialect) from exc
        finally:
            connection.close()
