"""Re-run write transactions that lost a race, the way oslo.db does.

Several API threads, worker processes and API nodes write the mapping
database at once.  On PostgreSQL and MySQL/MariaDB (Galera above all) the
server may then break a deadlock, a serialization failure or a lock wait
by rolling one transaction back (:class:`~instance_aware.store.errors.
LostRace`).  Nothing is wrong with that transaction: it is re-run from its
start (read, check, write), after an exponential backoff with jitter so
that the racers do not meet again, by :class:`oslo_db.api.wrap_db_retry`
itself.  Logical conflicts (an image id that already has a record, a
unique constraint) are never retried: re-running cannot change them.

The policy belongs to a :class:`~instance_aware.store.engine.Database`;
store methods that open one write transaction are decorated with
:func:`transaction`.  The store takes the policy as plain numbers: the
callers build it from their options (:mod:`instance_aware.database`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

from oslo_db import api as oslo_db_api
from oslo_log import log as logging

from instance_aware.store import errors

if TYPE_CHECKING:
    from instance_aware.store.engine import Database

LOG = logging.getLogger(__name__)

P = ParamSpec('P')
R = TypeVar('R')


def lost_race(exc: BaseException) -> bool:
    """Whether ``exc`` is worth re-running the transaction for."""
    if isinstance(exc, errors.LostRace):
        LOG.info('Mapping database transaction lost a race: %s', exc)
        return True
    return False


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a lost race is retried.

    The first retry waits ``interval`` seconds; each next one a random
    time below twice the previous bound (``interval * 2**n``), never more
    than ``max_interval``: :class:`oslo_db.api.wrap_db_retry` with
    ``inc_retry_interval`` and ``jitter``.  ``max_retries=0`` retries
    nothing.  The defaults equal the defaults of the options that set
    it (``db_max_retries`` ...).
    """

    max_retries: int = 5
    interval: float = 0.05
    max_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.interval < 0 or (
                self.max_interval < 0):
            raise ValueError(f'negative retry setting in {self!r}')

    def call(self, func: Callable[P, R], *args: P.args,
             **kwargs: P.kwargs) -> R:
        """``func(*args, **kwargs)``, re-run while it loses races."""
        retried: Callable[P, R] = oslo_db_api.wrap_db_retry(
            retry_interval=self.interval, max_retries=self.max_retries,
            inc_retry_interval=True, max_retry_interval=self.max_interval,
            exception_checker=lost_race, jitter=True)(func)
        return retried(*args, **kwargs)


class HasDatabase(Protocol):
    """A store class whose transactions run on ``db``."""

    @property
    def db(self) -> Database: ...


S = TypeVar('S', bound=HasDatabase)


def transaction(method: Callable[Concatenate[S, P], R]
                ) -> Callable[Concatenate[S, P], R]:
    """Re-run ``method`` whole when its transaction loses a race.

    ``method`` must open its own transaction (and only one), so a retry
    reads again what the lost attempt read before deciding what to write.
    """

    @functools.wraps(method)
    def wrapper(store: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return store.db.retry.call(method, store, *args, **kwargs)

    return wrapper
