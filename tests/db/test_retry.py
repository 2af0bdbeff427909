"""Write transactions that lose a race are re-run, on real servers.

PostgreSQL and MariaDB roll a transaction back to break a deadlock, a
serialization failure or a lock wait.  The races are provoked two ways:

* deterministically, by a trigger that fails the first writes with the
  server's own error (:mod:`tests.races`), so the driver,
  :func:`~instance_aware.store.errors.translated` and the retry all see
  exactly what a real deadlock gives;
* for real, by two transactions locking two rows in opposite orders.

SQLite takes the write lock at ``BEGIN`` (no deadlocks to retry); the
duplicate-id test runs there too.
"""

from __future__ import annotations

import concurrent.futures
import pathlib
import threading
import types
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from oslo_db import api as oslo_db_api

from instance_aware.store import engine as ia_engine
from instance_aware.store import errors, migration, models
from instance_aware.store.records import Records, RelationFields
from instance_aware.store.retry import RetryPolicy
from tests.dbbackends import MYSQL, POSTGRESQL, throwaway_database
from tests.races import Injector, Race

pytestmark = pytest.mark.database

INSTANCE = str(uuid.UUID(int=11, version=4))
VALUES = {'instance_uuid': INSTANCE, 'image_type': 'backup',
          'backup_type': 'daily'}
RELATION = RelationFields(INSTANCE, None, 'backup', 'daily', True, 'nova')
#: Fast retries: the tests wait for nothing but the servers.
QUICK = RetryPolicy(max_retries=3, interval=0.001, max_interval=0.01)

RACES = [
    pytest.param(Race(POSTGRESQL, '40P01'), id='postgresql-deadlock'),
    pytest.param(Race(POSTGRESQL, '40001'), id='postgresql-serialization'),
    pytest.param(Race(POSTGRESQL, '55P03'), id='postgresql-lock-timeout'),
    pytest.param(Race(MYSQL, '1213'), id='mysql-deadlock'),
    pytest.param(Race(MYSQL, '1205'), id='mysql-lock-wait-timeout'),
]


@pytest.fixture(params=RACES)
def injector(request: pytest.FixtureRequest,
             tmp_path: pathlib.Path) -> Iterator[Injector]:
    race: Race = request.param
    with throwaway_database(race.backend, tmp_path) as url:
        engine = ia_engine.create_engine(url)
        try:
            migration.upgrade(engine)
            yield Injector(engine, race)
        finally:
            engine.dispose()


def _records(engine: sa.Engine, policy: RetryPolicy = QUICK) -> Records:
    return Records(ia_engine.Database(engine, policy), 'r1')


def _rows(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {table: conn.scalar(
                    sa.select(sa.func.count()).select_from(
                        models.Base.metadata.tables[table])) or 0
                for table in ('ia_images', 'ia_properties', 'ia_relations')}


@pytest.mark.parametrize('failures', [1, 3])
def test_lost_race_on_create_is_retried_and_succeeds(
        injector: Injector, failures: int) -> None:
    records = _records(injector.engine)
    image_id = str(uuid.uuid4())
    injector.arm(first=failures)
    records.begin(image_id, 'p', models.INSTANCE, VALUES, RELATION)
    assert injector.attempts() == failures + 1
    stored = records.get(image_id, models.INSTANCE)
    assert stored is not None
    assert (stored.state, stored.values, stored.relation) == (
        models.PENDING, VALUES, RELATION)
    # The lost attempts left nothing behind.
    assert _rows(injector.engine) == {
        'ia_images': 1, 'ia_properties': 3, 'ia_relations': 1}


def test_lost_race_on_delete_is_retried_and_succeeds(
        injector: Injector) -> None:
    records = _records(injector.engine)
    image_id = str(uuid.uuid4())
    records.begin(image_id, 'p', models.INSTANCE, VALUES, RELATION)
    records.commit(image_id, models.INSTANCE, 'p', None)
    injector.arm(first=2)
    assert records.mark_deleted(image_id) is True
    assert injector.attempts() == 3
    stored = records.get(image_id, models.INSTANCE)
    assert stored is not None and stored.state == models.DELETED
    assert stored.deleted_at is not None and stored.values == VALUES


def test_exhausted_retries_are_a_conflict_that_wrote_nothing(
        injector: Injector) -> None:
    records = _records(injector.engine, RetryPolicy(2, 0.001, 0.001))
    image_id = str(uuid.uuid4())
    injector.arm(first=10)
    with pytest.raises(errors.Conflict, match='lost race') as caught:
        records.begin(image_id, 'p', models.INSTANCE, VALUES, RELATION)
    assert isinstance(caught.value, errors.LostRace)
    assert injector.attempts() == 3  # the first try and two retries
    assert records.get(image_id, models.INSTANCE) is None
    assert _rows(injector.engine) == {
        'ia_images': 0, 'ia_properties': 0, 'ia_relations': 0}


def test_retry_reruns_the_check_and_sees_the_winner(
        injector: Injector, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole read-check-write is re-run, not just the failed write.

    While the loser backs off, another API node creates the same image
    id; the retried create must find it and refuse (the logical
    conflict, not retried again), not overwrite it.
    """
    records = _records(injector.engine)
    winner = _records(injector.engine)
    image_id = str(uuid.uuid4())
    theirs = {**VALUES, 'backup_type': 'weekly'}

    def concurrent_create(_seconds: float) -> None:
        winner.begin(image_id, 'p', models.INSTANCE, theirs)

    monkeypatch.setattr(oslo_db_api, 'time',
                        types.SimpleNamespace(sleep=concurrent_create))
    injector.arm(first=1)
    with pytest.raises(errors.Conflict, match='already has a record') as c:
        records.begin(image_id, 'p', models.INSTANCE, VALUES, RELATION)
    assert not isinstance(c.value, errors.LostRace)
    # Ours failed, the winner's insert passed, and our retried insert was
    # refused by the unique constraint: nothing of ours was written.
    assert injector.attempts() == 3
    stored = records.get(image_id, models.INSTANCE)
    assert stored is not None and stored.values == theirs


class _CountingDatabase(ia_engine.Database):
    """Counts the write transactions opened."""

    writes = 0

    def session(self, write: bool = False) -> Any:
        if write:
            self.writes += 1
        return super().session(write)

    def writer(self) -> Any:
        self.writes += 1
        return super().writer()


def test_duplicate_image_id_is_not_retried(db_url: str) -> None:
    engine = ia_engine.create_engine(db_url)
    try:
        migration.upgrade(engine)
        db = _CountingDatabase(engine, QUICK)
        records = Records(db, 'r1')
        image_id = str(uuid.uuid4())
        records.begin(image_id, 'p', models.INSTANCE, VALUES, RELATION)
        records.commit(image_id, models.INSTANCE, 'p', None)
        db.writes = 0
        with pytest.raises(errors.Conflict,
                           match='already has a record') as caught:
            records.begin(image_id, 'q', models.INSTANCE,
                          {'image_type': 'snapshot'})
        # The unique constraint refused it (two API nodes cannot both
        # pass a check): one write transaction, not retried.
        assert not isinstance(caught.value, errors.LostRace)
        assert db.writes == 1
        stored = records.get(image_id, models.INSTANCE)
        assert stored is not None
        assert (stored.state, stored.project_id, stored.values) == (
            models.ACTIVE, 'p', VALUES)
    finally:
        engine.dispose()


@pytest.fixture(params=[pytest.param(POSTGRESQL, id=POSTGRESQL),
                        pytest.param(MYSQL, id=MYSQL)])
def server_engine(request: pytest.FixtureRequest,
                  tmp_path: pathlib.Path) -> Iterator[sa.Engine]:
    """A migrated engine on a new PostgreSQL or MariaDB database."""
    with throwaway_database(request.param, tmp_path) as url:
        engine = ia_engine.create_engine(url)
        try:
            migration.upgrade(engine)
            yield engine
        finally:
            engine.dispose()


def test_real_deadlock_is_retried_and_both_writers_win(
        server_engine: sa.Engine) -> None:
    """Two transactions lock two image rows in opposite orders.

    The server breaks the deadlock by rolling one back; re-run, it waits
    for the other to commit and then writes too.  Without the retry one
    of them would fail (checked with ``max_retries=0``).
    """
    records = _records(server_engine)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    for image_id in (first, second):
        records.begin(image_id, 'p', models.INSTANCE, VALUES, RELATION)

    def run(policy: RetryPolicy) -> list[BaseException | None]:
        db = ia_engine.Database(server_engine, policy)
        both_locked_one = threading.Barrier(2, timeout=10)
        tries: list[str] = []

        def cross(mine: str, theirs: str, owner: str) -> None:
            tries.append(owner)
            with db.session(write=True) as session:
                for image_id in (mine, theirs):
                    # By the unique (registry, image id) index: InnoDB
                    # locks every row a scan reads.
                    image = session.scalars(
                        sa.select(models.Image).where(
                            models.Image.registry_id == 'r1',
                            models.Image.image_id == image_id)
                        .with_for_update()).one()
                    if image_id == mine and tries.count(owner) == 1:
                        both_locked_one.wait()
                    image.project_id = owner

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(policy.call, cross, first, second, 'a'),
                       pool.submit(policy.call, cross, second, first, 'b')]
            concurrent.futures.wait(futures, timeout=60)
            return [future.exception(timeout=0) for future in futures]

    outcomes = run(RetryPolicy(0, 0, 0))
    lost = [e for e in outcomes if e is not None]
    assert len(lost) == 1 and isinstance(lost[0], errors.LostRace), outcomes

    assert run(QUICK) == [None, None]
    stored = records.load([first, second], models.INSTANCE,
                          (models.PENDING,))
    owners = {s.project_id for s in stored.values()}
    # One transaction ran after the other: the last one owns both.
    assert len(stored) == 2 and len(owners) == 1 and owners <= {'a', 'b'}
