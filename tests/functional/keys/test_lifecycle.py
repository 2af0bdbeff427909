"""The key lifecycle end to end against a real Barbican 23.

Every assertion reads back what Barbican holds (its consumers list, the
secret itself) and what the store recorded (``ia_encryption_keys``).
"""

from __future__ import annotations

import logging
import pathlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from instance_aware.keys import lifecycle
from instance_aware.keys.lifecycle import (
    KeyManagerUnavailable,
    KeyNotAccessible,
)
from instance_aware.store import models
from tests.functional.keys.conftest import (
    REGISTRY,
    BarbicanApi,
    add_image,
    caller,
    key_conf,
    key_row,
    set_image_state,
)
from tests.local import barbican


def image_consumer(image_id: str) -> dict[str, str]:
    return {'service': 'image', 'resource_type': 'image',
            'resource_id': image_id}


#: The key lifecycle's modules log under this package.
KEYS_LOGGER = 'instance_aware.keys'


def lifecycle_warnings(caplog: pytest.LogCaptureFixture,
                       level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith(f'{KEYS_LOGGER}.') and r.levelno == level]


def created(keys: lifecycle.KeyLifecycle, api: BarbicanApi, project: str,
            policy: str | None) -> tuple[str, str]:
    """A secret of ``project`` and an image registered on it."""
    secret = api.create_secret(project)
    image = add_image(keys.db, project)
    assert keys.on_created(caller(project), image, secret,
                           policy) == lifecycle.CONSUMER_REGISTERED
    return secret, image


def test_create_registers_the_image_as_consumer(keys, db, barbican_api):
    secret = barbican_api.create_secret('alpha')
    image = add_image(db, 'alpha')

    keys.check_readable(caller('alpha'), secret)
    state = keys.on_created(caller('alpha'), image, secret,
                            lifecycle.ON_IMAGE_DELETION)

    assert state == lifecycle.CONSUMER_REGISTERED
    assert barbican_api.consumers(secret, 'alpha') == [image_consumer(image)]
    shown = barbican_api.secret(secret, 'alpha').json()
    assert [{k: c[k] for k in ('service', 'resource_type', 'resource_id')}
            for c in shown['consumers']] == [image_consumer(image)]
    assert key_row(db, image) == {
        'key_id': secret, 'deletion_policy': lifecycle.ON_IMAGE_DELETION,
        'lifecycle_state': lifecycle.CONSUMER_REGISTERED, 'attempts': 0,
        'last_error': None}


def test_create_again_is_idempotent(keys, db, barbican_api):
    secret, image = created(keys, barbican_api, 'alpha',
                            lifecycle.DO_NOT_DELETE)

    assert keys.on_created(caller('alpha'), image, secret,
                           lifecycle.DO_NOT_DELETE) == (
        lifecycle.CONSUMER_REGISTERED)
    assert barbican_api.consumers(secret, 'alpha') == [image_consumer(image)]


def test_delete_with_on_image_deletion_deletes_the_secret(keys, db,
                                                          barbican_api):
    secret, image = created(keys, barbican_api, 'alpha',
                            lifecycle.ON_IMAGE_DELETION)
    set_image_state(db, image, models.DELETED)

    assert keys.on_deleted(caller('alpha'), image) == lifecycle.KEY_DELETED

    gone = barbican_api.secret(secret, 'alpha')
    assert gone.status_code == 404, gone.text
    assert key_row(db, image) == {
        'key_id': secret, 'deletion_policy': lifecycle.ON_IMAGE_DELETION,
        'lifecycle_state': lifecycle.KEY_DELETED, 'attempts': 0,
        'last_error': None}
    # A second deletion event (a retried request) changes nothing.
    assert keys.on_deleted(caller('alpha'), image) == lifecycle.KEY_DELETED


@pytest.mark.parametrize('policy', [
    pytest.param(lifecycle.DO_NOT_DELETE, id='do_not_delete'),
    pytest.param(None, id='no-policy'),
])
def test_delete_without_deletion_policy_keeps_the_secret(keys, db,
                                                         barbican_api,
                                                         policy):
    secret, image = created(keys, barbican_api, 'alpha', policy)
    set_image_state(db, image, models.DELETED)

    assert keys.on_deleted(caller('alpha'),
                           image) == lifecycle.CONSUMER_REMOVED

    kept = barbican_api.secret(secret, 'alpha')
    assert kept.status_code == 200, kept.text
    assert kept.json()['status'] == 'ACTIVE'
    assert barbican_api.consumers(secret, 'alpha') == []
    assert key_row(db, image)['lifecycle_state'] == (
        lifecycle.CONSUMER_REMOVED)


def test_secret_still_consumed_elsewhere_is_kept_with_a_warning(
        keys, db, barbican_api, caplog):
    secret, image = created(keys, barbican_api, 'alpha',
                            lifecycle.ON_IMAGE_DELETION)
    volume = str(uuid.uuid4())
    barbican_api.add_consumer(secret, 'alpha', 'volume', 'volume', volume)
    set_image_state(db, image, models.DELETED)

    with caplog.at_level(logging.INFO, logger=KEYS_LOGGER):
        state = keys.on_deleted(caller('alpha'), image)

    assert state == lifecycle.CONSUMER_REMOVED
    assert barbican_api.secret(secret, 'alpha').status_code == 200
    assert barbican_api.consumers(secret, 'alpha') == [
        {'service': 'volume', 'resource_type': 'volume',
         'resource_id': volume}]
    warnings = lifecycle_warnings(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert f'volume/volume/{volume}' in warnings[0]
    assert not lifecycle_warnings(caplog, logging.ERROR)
    row = key_row(db, image)
    assert row['lifecycle_state'] == lifecycle.CONSUMER_REMOVED
    assert row['attempts'] == 0 and row['last_error'] is None


def test_foreign_and_missing_secrets_are_not_readable(keys, barbican_api):
    secret = barbican_api.create_secret('alpha')

    with pytest.raises(KeyNotAccessible) as foreign:
        keys.check_readable(caller('beta'), secret)
    assert foreign.value.reason == 'forbidden'
    with pytest.raises(KeyNotAccessible) as missing:
        keys.check_readable(caller('beta'), str(uuid.uuid4()))
    assert missing.value.reason == 'not_found'
    with pytest.raises(KeyNotAccessible) as malformed:
        keys.check_readable(caller('beta'), '../secrets')
    assert malformed.value.reason == 'not_found'
    # The owner can.
    keys.check_readable(caller('alpha'), secret)


def test_create_on_a_foreign_secret_is_refused_and_recorded(keys, db,
                                                             barbican_api):
    secret = barbican_api.create_secret('alpha')
    image = add_image(db, 'beta')

    with pytest.raises(KeyNotAccessible):
        keys.on_created(caller('beta'), image, secret,
                        lifecycle.ON_IMAGE_DELETION)

    assert barbican_api.consumers(secret, 'alpha') == []
    row = key_row(db, image)
    assert row['lifecycle_state'] == lifecycle.FAILED
    assert row['attempts'] == 1
    assert row['last_error'].startswith('on_created: ')
    assert 'forbidden' in row['last_error']


def test_delete_by_an_admin_of_another_project_is_retried_as_service(
        keys, conf, db, barbican_api):
    """Barbican lets only the secret's project remove its consumers: the
    caller's identity fails, the service identity finishes the job."""
    secret, image = created(keys, barbican_api, 'alpha',
                            lifecycle.ON_IMAGE_DELETION)
    set_image_state(db, image, models.DELETED)

    state = keys.on_deleted(caller('beta', roles=('admin', 'member')),
                            image)

    assert state == lifecycle.FAILED
    assert barbican_api.consumers(secret, 'alpha') == [image_consumer(image)]
    summary = keys.retry_failed(lifecycle.service_contexts(conf))
    assert summary == lifecycle.RetrySummary(
        retried=1, succeeded=1, states={lifecycle.KEY_DELETED: 1})
    assert barbican_api.secret(secret, 'alpha').status_code == 404
    row = key_row(db, image)
    assert row['lifecycle_state'] == lifecycle.KEY_DELETED
    assert row['attempts'] == 1 and row['last_error'] is None


@pytest.fixture
def own_barbican(tmp_path: pathlib.Path,
                 barbican_server: barbican.BarbicanServer
                 ) -> Iterator[barbican.BarbicanServer]:
    """A Barbican of this test only, to stop and start again."""
    server = barbican.BarbicanServer(tmp_path / 'own-barbican',
                                     max_lifetime=300)
    with server:
        yield server


def test_outage_is_recorded_and_retried_when_barbican_is_back(
        tmp_path, db, own_barbican):
    conf = key_conf(tmp_path, own_barbican.url)
    keys = lifecycle.KeyLifecycle(conf, db, REGISTRY)
    api = BarbicanApi(own_barbican.url)
    secret, image = created(keys, api, 'alpha',
                            lifecycle.ON_IMAGE_DELETION)
    pending = api.create_secret('alpha')
    registering = add_image(db, 'alpha')
    waiting = add_image(db, 'alpha', state=models.PENDING)
    set_image_state(db, image, models.DELETED)
    own_barbican.stop()

    began = time.monotonic()
    assert keys.on_deleted(caller('alpha'), image) == lifecycle.FAILED
    with pytest.raises(KeyManagerUnavailable):
        keys.check_readable(caller('alpha'), secret)
    with pytest.raises(KeyManagerUnavailable):
        keys.on_created(caller('alpha'), registering, pending,
                        lifecycle.DO_NOT_DELETE)
    with pytest.raises(KeyManagerUnavailable):
        keys.on_created(caller('alpha'), waiting, pending,
                        lifecycle.DO_NOT_DELETE)
    assert time.monotonic() - began < 10
    row = key_row(db, image)
    assert row['lifecycle_state'] == lifecycle.FAILED
    assert row['attempts'] == 1
    assert row['last_error'].startswith('on_deleted: ')
    # Still down: the retry fails again and says so.
    down = keys.retry_failed(lifecycle.service_contexts(conf))
    assert down == lifecycle.RetrySummary(
        retried=2, failed=2, skipped=1, states={lifecycle.FAILED: 2})
    assert key_row(db, image)['attempts'] == 2

    own_barbican.start()
    summary = keys.retry_failed(lifecycle.service_contexts(conf))

    assert summary == lifecycle.RetrySummary(
        retried=2, succeeded=2, skipped=1,
        states={lifecycle.KEY_DELETED: 1,
                lifecycle.CONSUMER_REGISTERED: 1})
    assert api.secret(secret, 'alpha').status_code == 404
    assert api.consumers(pending, 'alpha') == [image_consumer(registering)]
    assert key_row(db, image) == {
        'key_id': secret, 'deletion_policy': lifecycle.ON_IMAGE_DELETION,
        'lifecycle_state': lifecycle.KEY_DELETED, 'attempts': 2,
        'last_error': None}
    assert key_row(db, registering)['lifecycle_state'] == (
        lifecycle.CONSUMER_REGISTERED)
    # The pending image waits for reconcile to settle it.
    assert key_row(db, waiting)['lifecycle_state'] == lifecycle.FAILED
    assert keys.retry_failed(lifecycle.service_contexts(conf)) == (
        lifecycle.RetrySummary(skipped=1))
    api.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(('127.0.0.1', 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_hanging_key_manager_is_bounded_by_the_timeout(tmp_path, db,
                                                         silent_port):
    conf = key_conf(tmp_path, f'http://127.0.0.1:{silent_port}',
                    timeout=0.5)
    keys = lifecycle.KeyLifecycle(conf, db, REGISTRY)
    image = add_image(db, 'alpha')

    began = time.monotonic()
    with pytest.raises(KeyManagerUnavailable):
        keys.check_readable(caller('alpha'), str(uuid.uuid4()))
    with pytest.raises(KeyManagerUnavailable):
        keys.on_created(caller('alpha'), image, str(uuid.uuid4()),
                        lifecycle.ON_IMAGE_DELETION)
    set_image_state(db, image, models.DELETED)
    assert keys.on_deleted(caller('alpha'), image) == lifecycle.FAILED

    assert time.monotonic() - began < 10
    assert key_row(db, image)['attempts'] == 2
