"""Store errors the filters act on, independent of the database driver."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy.exc


class StoreError(Exception):
    """Base of every mapping-store error."""


class StoreUnavailable(StoreError):
    """The mapping database cannot be reached: the request gets 503."""


class Conflict(StoreError):
    """A concurrent write won (unique constraint, deadlock): 409."""


class LostRace(Conflict):
    """The transaction lost a race the server broke by rolling it back.

    A deadlock, a serialization failure or a lock wait that timed out
    (Galera's certification failures come as deadlocks): nothing is wrong
    with the data or the request, so :mod:`instance_aware.store.retry`
    re-runs the whole transaction.  Still a :class:`Conflict` (409) once
    the retries are used up.
    """


# Transaction-rollback SQLSTATE class (serialization failure, deadlock),
# PostgreSQL's lock_not_available (lock_timeout) and MySQL's deadlock /
# lock-wait-timeout codes: the transaction lost a race and may simply be
# retried; the server itself is fine.
_PG_ROLLBACK_CLASS = '40'
_PG_LOCK_NOT_AVAILABLE = '55P03'
_MYSQL_RETRYABLE = frozenset({1205, 1213})


def _lost_race(exc: sqlalchemy.exc.DBAPIError) -> bool:
    orig = exc.orig
    # PostgreSQL's SQLSTATE: ``pgcode`` with psycopg2, ``sqlstate`` with
    # psycopg (3); pymysql has a ``sqlstate`` too, but MySQL is told by
    # its error number below.
    pgcode = getattr(orig, 'pgcode', None)
    if pgcode is None and type(orig).__module__.startswith('psycopg.'):
        pgcode = getattr(orig, 'sqlstate', None)
    if isinstance(pgcode, str):
        return (pgcode.startswith(_PG_ROLLBACK_CLASS)
                or pgcode == _PG_LOCK_NOT_AVAILABLE)
    args: tuple[object, ...] = tuple(getattr(orig, 'args', ()))
    return bool(args) and args[0] in _MYSQL_RETRYABLE


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Map SQLAlchemy/DBAPI errors to :class:`StoreError` subclasses."""
    try:
        yield
    except sqlalchemy.exc.IntegrityError as exc:
        raise Conflict(str(exc.orig)) from exc
    except sqlalchemy.exc.DBAPIError as exc:
        if _lost_race(exc):
            raise LostRace(str(exc.orig)) from exc
        if exc.connection_invalidated or isinstance(
                exc, (sqlalchemy.exc.OperationalError,
                      sqlalchemy.exc.InterfaceError)):
            raise StoreUnavailable(str(exc)) from exc
        raise
    except sqlalchemy.exc.TimeoutError as exc:
        raise StoreUnavailable(str(exc)) from exc
