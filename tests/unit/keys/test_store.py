"""What the key lifecycle records, on SQLite, PostgreSQL and MariaDB.

The key manager is an in-memory stand-in with Barbican's consumer rules
(a consumed secret is not deleted) and an off switch: these tests are
about the rows, the end-to-end behaviour is in tests/functional/keys.
"""

from __future__ import annotations

import uuid

import pytest
from barbicanclient import exceptions as barbican_exceptions
from castellan.common import exception as castellan_exception
from castellan.common.objects import opaque_data
from keystoneauth1 import exceptions as ks_exceptions
from oslo_config import cfg
from oslo_context import context as oslo_context

from instance_aware.keys import lifecycle, opts
from instance_aware.store import engine as ia_engine
from instance_aware.store import models


class FakeKeyManager:
    """Secrets and their consumers in memory; ``down`` refuses calls."""

    def __init__(self) -> None:
        self.consumers: dict[str, list[dict[str, str]]] = {}
        self.down = False

    def create(self) -> str:
        key_id = str(uuid.uuid4())
        self.consumers[key_id] = []
        return key_id

    def _secret(self, key_id: str) -> list[dict[str, str]]:
        if self.down:
            raise ks_exceptions.ConnectFailure('connection refused')
        if key_id not in self.consumers:
            raise castellan_exception.ManagedObjectNotFoundError(uuid=key_id)
        return self.consumers[key_id]

    def add_consumer(self, context, key_id, data):
        found = self._secret(key_id)
        if data not in found:
            found.append(dict(data))

    def remove_consumer(self, context, key_id, data):
        found = self._secret(key_id)
        if data not in found:
            raise castellan_exception.ManagedObjectNotFoundError(uuid=key_id)
        found.remove(data)

    def get(self, context, key_id, metadata_only=False):
        return opaque_data.OpaqueData(b'', consumers=list(
            self._secret(key_id)))

    def delete(self, context, key_id, force=False):
        if self._secret(key_id) and not force:
            try:
                raise barbican_exceptions.SecretHasConsumers()
            except barbican_exceptions.SecretHasConsumers as exc:
                raise castellan_exception.KeyManagerError(
                    reason=exc) from exc
        del self.consumers[key_id]


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    c = cfg.ConfigOpts()
    c([], project='glance')
    opts.register_opts(c)
    c.set_override('auth_mode', opts.TRUSTED_HEADERS, group=opts.GROUP)
    return c


@pytest.fixture
def db(migrated_engine) -> ia_engine.Database:
    return ia_engine.Database(migrated_engine)


@pytest.fixture
def km() -> FakeKeyManager:
    return FakeKeyManager()


def caller(project: str = 'alpha') -> oslo_context.RequestContext:
    return oslo_context.RequestContext(user_id=f'{project}-user',
                                       project_id=project,
                                       roles=['member'], overwrite=False)


def add_image(db, registry: str, state: str = models.ACTIVE) -> str:
    image_id = str(uuid.uuid4())
    with db.session(write=True) as session:
        session.add(models.Image(registry_id=registry, image_id=image_id,
                                 project_id='alpha', state=state))
    return image_id


def state_of(db, registry: str, image_id: str) -> tuple[str, int, str | None]:
    with db.session() as session:
        image = session.query(models.Image).filter_by(
            registry_id=registry, image_id=image_id).one()
        [row] = image.encryption_keys
        return row.lifecycle_state, row.attempts, row.last_error


def mark_deleted(db, registry: str, image_id: str) -> None:
    with db.session(write=True) as session:
        session.query(models.Image).filter_by(
            registry_id=registry, image_id=image_id).one().state = (
                models.DELETED)


def service(project_id):
    return caller(project_id or 'alpha')


def test_failures_are_recorded_and_retried_per_registry(conf, db, km):
    mine = lifecycle.KeyLifecycle(conf, db, 'one', key_manager=km)
    theirs = lifecycle.KeyLifecycle(conf, db, 'two', key_manager=km)
    images = {}
    for name, keys in (('mine', mine), ('theirs', theirs)):
        key_id = km.create()
        image = add_image(db, keys.registry_id)
        assert keys.on_created(caller(), image, key_id,
                               lifecycle.ON_IMAGE_DELETION) == (
            lifecycle.CONSUMER_REGISTERED)
        mark_deleted(db, keys.registry_id, image)
        images[name] = (key_id, image)
    km.down = True

    assert mine.on_deleted(caller(), images['mine'][1]) == lifecycle.FAILED
    assert theirs.on_deleted(caller(),
                             images['theirs'][1]) == lifecycle.FAILED

    state, attempts, error = state_of(db, 'one', images['mine'][1])
    assert (state, attempts) == (lifecycle.FAILED, 1)
    assert error.startswith('on_deleted: key manager error')
    km.down = False
    assert mine.retry_failed(service) == lifecycle.RetrySummary(
        retried=1, succeeded=1, states={lifecycle.KEY_DELETED: 1})
    assert images['mine'][0] not in km.consumers
    assert state_of(db, 'one', images['mine'][1]) == (
        lifecycle.KEY_DELETED, 1, None)
    # The other registry's row is its own reconcile's business.
    assert state_of(db, 'two', images['theirs'][1])[0] == lifecycle.FAILED
    assert km.consumers[images['theirs'][0]] != []


def test_retry_takes_the_oldest_first_within_the_limit(conf, db, km):
    keys = lifecycle.KeyLifecycle(conf, db, 'one', key_manager=km)
    km.down = True
    first, second = add_image(db, 'one'), add_image(db, 'one')
    for image in (first, second):
        with pytest.raises(lifecycle.KeyManagerUnavailable):
            keys.on_created(caller(), image, km.create(),
                            lifecycle.DO_NOT_DELETE)
    km.down = False

    assert keys.retry_failed(service, limit=1).succeeded == 1
    assert state_of(db, 'one', first)[0] == lifecycle.CONSUMER_REGISTERED
    assert state_of(db, 'one', second)[0] == lifecycle.FAILED


def test_replacing_the_key_releases_the_old_consumer_only(conf, db, km):
    keys = lifecycle.KeyLifecycle(conf, db, 'one', key_manager=km)
    old, new = km.create(), km.create()
    image = add_image(db, 'one')
    keys.on_created(caller(), image, old, lifecycle.ON_IMAGE_DELETION)

    keys.on_created(caller(), image, new, lifecycle.ON_IMAGE_DELETION)

    assert km.consumers[old] == []
    assert km.consumers[new] == [lifecycle.consumer(image)]
    assert state_of(db, 'one', image) == (
        lifecycle.CONSUMER_REGISTERED, 0, None)


def test_an_image_without_a_key_has_nothing_to_release(conf, db, km):
    keys = lifecycle.KeyLifecycle(conf, db, 'one', key_manager=km)
    image = add_image(db, 'one')
    assert keys.on_deleted(caller(), image) is None
    assert keys.on_deleted(caller(), str(uuid.uuid4())) is None


def test_created_needs_the_filters_image_row(conf, db, km):
    keys = lifecycle.KeyLifecycle(conf, db, 'one', key_manager=km)
    with pytest.raises(LookupError):
        keys.on_created(caller(), str(uuid.uuid4()), km.create(),
                        lifecycle.DO_NOT_DELETE)


def test_deletion_survives_an_unavailable_store(conf, km, tmp_path):
    engine = ia_engine.create_engine(f'sqlite:///{tmp_path}/none/x.db')
    keys = lifecycle.KeyLifecycle(conf, ia_engine.Database(engine), 'one',
                                  key_manager=km)
    # No schema at all: reads fail; the deletion must still go on.
    assert keys.on_deleted(caller(), str(uuid.uuid4())) is None
    engine.dispose()
