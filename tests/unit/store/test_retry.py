"""The retry policy: which errors it re-runs, how often, how patiently.

No database here (``tests/db/test_retry.py`` runs real transactions):
driver errors are built the way the drivers raise them and the backoff is
read from the sleeps :func:`oslo_db.api.wrap_db_retry` asks for.
"""

from __future__ import annotations

import contextlib
import pathlib
import types
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest
import sqlalchemy.exc
from oslo_db import api as oslo_db_api

from instance_aware.store import errors, retry


class _PgError(Exception):
    """What psycopg2 raises: the SQLSTATE in ``pgcode``."""

    def __init__(self, pgcode: str) -> None:
        super().__init__(f'pgcode {pgcode}')
        self.pgcode = pgcode


def _raise(orig: Exception,
           kind: type[sqlalchemy.exc.DBAPIError]) -> Callable[[], None]:
    def run() -> None:
        with errors.translated():
            raise kind('INSERT ...', {}, orig)
    return run


@pytest.mark.parametrize(('orig', 'kind', 'expected'), [
    pytest.param(_PgError('40P01'), sqlalchemy.exc.OperationalError,
                 errors.LostRace, id='pg-deadlock'),
    pytest.param(_PgError('40001'), sqlalchemy.exc.OperationalError,
                 errors.LostRace, id='pg-serialization'),
    pytest.param(_PgError('55P03'), sqlalchemy.exc.OperationalError,
                 errors.LostRace, id='pg-lock-timeout'),
    pytest.param(pymysql.err.OperationalError(1213, 'Deadlock found'),
                 sqlalchemy.exc.OperationalError, errors.LostRace,
                 id='mysql-deadlock'),
    pytest.param(pymysql.err.OperationalError(1205, 'Lock wait timeout'),
                 sqlalchemy.exc.OperationalError, errors.LostRace,
                 id='mysql-lock-wait'),
    pytest.param(_PgError('23505'), sqlalchemy.exc.IntegrityError,
                 errors.Conflict, id='pg-unique'),
    pytest.param(pymysql.err.IntegrityError(1062, 'Duplicate entry'),
                 sqlalchemy.exc.IntegrityError, errors.Conflict,
                 id='mysql-duplicate'),
    pytest.param(_PgError('57P01'), sqlalchemy.exc.OperationalError,
                 errors.StoreUnavailable, id='pg-admin-shutdown'),
    pytest.param(pymysql.err.OperationalError(2003, "Can't connect"),
                 sqlalchemy.exc.OperationalError, errors.StoreUnavailable,
                 id='mysql-unreachable'),
])
def test_only_lost_races_are_retryable(
        orig: Exception, kind: type[sqlalchemy.exc.DBAPIError],
        expected: type[errors.StoreError]) -> None:
    with pytest.raises(errors.StoreError) as caught:
        _raise(orig, kind)()
    assert type(caught.value) is expected
    assert retry.lost_race(caught.value) is (expected is errors.LostRace)
    # A lost race that is never won is still a 409 for the filters.
    assert isinstance(caught.value, errors.Conflict) is (
        expected is not errors.StoreUnavailable)


class _Flaky:
    """Fails with ``error`` on the first ``failures`` calls."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self, value: str) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return f'done {value}'


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits ``wrap_db_retry`` asks for, instead of waiting."""
    asked: list[float] = []
    monkeypatch.setattr(oslo_db_api, 'time',
                        types.SimpleNamespace(sleep=asked.append))
    return asked


def test_lost_races_are_retried_with_growing_jittered_waits(
        sleeps: list[float]) -> None:
    policy = retry.RetryPolicy(max_retries=6, interval=0.1,
                               max_interval=0.5)
    flaky = _Flaky(5, errors.LostRace('deadlock'))
    assert policy.call(flaky, 'x') == 'done x'
    assert flaky.calls == 6
    assert len(sleeps) == 5
    assert sleeps[0] == 0.1
    # Then a random wait below 0.2, 0.4, 0.8 (capped), 1.6 (capped).
    for wait, bound in zip(sleeps[1:], (0.2, 0.4, 0.5, 0.5), strict=True):
        assert 0 <= wait <= bound


def test_exhausted_retries_raise_the_last_lost_race(
        sleeps: list[float]) -> None:
    policy = retry.RetryPolicy(max_retries=2, interval=0.01,
                               max_interval=0.01)
    flaky = _Flaky(10, errors.LostRace('deadlock'))
    with pytest.raises(errors.LostRace, match='deadlock'):
        policy.call(flaky, 'x')
    assert (flaky.calls, len(sleeps)) == (3, 2)


@pytest.mark.parametrize('error', [
    pytest.param(errors.Conflict('image x already has a record'),
                 id='logical-conflict'),
    pytest.param(errors.StoreUnavailable('down'), id='unavailable'),
    pytest.param(ValueError('bug'), id='other'),
])
def test_other_errors_are_not_retried(sleeps: list[float],
                                      error: Exception) -> None:
    flaky = _Flaky(1, error)
    policy = retry.RetryPolicy(max_retries=5, interval=0, max_interval=0)
    with pytest.raises(type(error)):
        policy.call(flaky, 'x')
    assert (flaky.calls, sleeps) == (1, [])


def test_zero_retries_disables_retrying(sleeps: list[float]) -> None:
    flaky = _Flaky(1, errors.LostRace('deadlock'))
    with pytest.raises(errors.LostRace):
        retry.RetryPolicy(0, 0.1, 1).call(flaky, 'x')
    assert (flaky.calls, sleeps) == (1, [])


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError, match='negative'):
        retry.RetryPolicy(max_retries=-1, interval=0, max_interval=0)


def test_transaction_decorator_uses_the_policy_of_its_database(
        sleeps: list[float]) -> None:
    class Store:
        def __init__(self, policy: retry.RetryPolicy) -> None:
            self.db = types.SimpleNamespace(retry=policy)
            self.flaky = _Flaky(2, errors.LostRace('deadlock'))

        @retry.transaction
        def write(self, value: str) -> str:
            """Docstring kept."""
            return self.flaky(value)

    store = Store(retry.RetryPolicy(3, 0.01, 0.01))
    assert store.write('y') == 'done y'
    assert store.flaky.calls == 3
    assert Store.write.__doc__ == 'Docstring kept.'
    stingy = Store(retry.RetryPolicy(1, 0.01, 0.01))
    with pytest.raises(errors.LostRace):
        stingy.write('y')
    assert stingy.flaky.calls == 2


class _LosingOnce:
    """A database whose next ``count`` write sessions lose a race."""

    def __init__(self, db: Any, count: int) -> None:
        self.db, self.left, self.lost = db, count, 0
        self.engine, self.retry = db.engine, db.retry

    @contextlib.contextmanager
    def session(self, write: bool = False) -> Iterator[Any]:
        if write and self.left:
            self.left -= 1
            self.lost += 1
            raise errors.LostRace('deadlock detected (injected)')
        with self.db.session(write=write) as session:
            yield session


def test_digest_and_key_writes_are_retried_too(
        tmp_path: pathlib.Path, sleeps: list[float]) -> None:
    from instance_aware.keys import lifecycle as key_lifecycle
    from instance_aware.store import (
        digests,
        encryption_keys,
        migration,
        models,
        records,
    )
    from instance_aware.store import engine as store_engine

    engine = store_engine.create_engine(f'sqlite:///{tmp_path}/r.sqlite')
    migration.upgrade(engine)
    db = store_engine.Database(engine, retry.RetryPolicy(3, 0.01, 0.01))
    losing = _LosingOnce(db, 0)
    image_id = 'c9f4a0a1-54c5-4c3c-9f54-6c1a0b1d9e01'
    records.Records(db, 'r').begin(image_id, 'p', models.ENCRYPTION,
                                   {'os_encrypt_format': 'luks'})
    store = digests.Digests(losing, 'r')  # type: ignore[arg-type]
    for write in (
            lambda: store.record(image_id, algo='sha512', digest='d',
                                 size=1, source='upload'),
            lambda: store.mark_verified(image_id, 'd'),
            lambda: store.mark_tampered(image_id, 'd'),
            lambda: store.confirm(image_id, 'd')):
        losing.left = 2
        write()
        assert losing.left == 0
    found = store.get(image_id)
    assert found is not None and found.state == models.RECORDED
    keys = key_lifecycle.KeyLifecycle.__new__(key_lifecycle.KeyLifecycle)
    keys.rows = encryption_keys.KeyRows(
        losing, 'r')  # type: ignore[arg-type]
    losing.left = 2
    key_id = '0b3f3cf4-2c07-4c46-9a54-36c2b0c7d8a1'
    assert keys._attach(image_id, key_lifecycle.STANDARD_KEY, key_id,
                        'on_image_deletion') is None
    losing.left = 2
    keys.rows.record(image_id, key_lifecycle.STANDARD_KEY, key_id,
                     key_lifecycle.CONSUMER_REGISTERED)
    assert losing.left == 0 and losing.lost == 12
    [stored] = keys.rows.read(image_id)
    assert stored.lifecycle_state == key_lifecycle.CONSUMER_REGISTERED
    engine.dispose()
