"""The key lifecycle end to end: client → stack → real Glance, and Barbican.

A Glance of its own whose stack talks to the session's Barbican (castellan
configured as a deployer would, header-trusting auth as the local Barbican
needs): secrets are created in Barbican as the user, images through the
stack, and Barbican itself is asked what happened to the consumers and
secrets.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from instance_aware.store import engine as ia_engine
from tests.functional.conftest import Api
from tests.functional.keys.conftest import BarbicanApi, key_row
from tests.local import barbican
from tests.local.server import GlanceServer


@pytest.fixture(scope='module')
def glance_with_keys(barbican_server: barbican.BarbicanServer,
                     tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[GlanceServer]:
    state = tmp_path_factory.mktemp('glance-keys')
    overrides = Path(state) / 'glance-api.conf.d'
    overrides.mkdir()
    (overrides / 'keys.conf').write_text(
        '[instance_aware_keys]\nenabled = true\n'
        'auth_mode = trusted_headers\n'
        '[key_manager]\nbackend = barbican\n'
        f'[barbican]\nbarbican_endpoint = {barbican_server.url}\n',
        encoding='utf-8')
    with GlanceServer(state, max_lifetime=900) as server:
        yield server


@pytest.fixture
def api(glance_with_keys: GlanceServer) -> Iterator[Api]:
    client = Api(glance_with_keys.url)
    yield client
    client.close()


@pytest.fixture
def store(glance_with_keys: GlanceServer) -> Iterator[ia_engine.Database]:
    engine = ia_engine.create_engine(
        glance_with_keys.state.instance_aware_db_url)
    yield ia_engine.Database(engine)
    engine.dispose()


def _create(api: Api, project: str, key_id: str,
            policy: str = 'on_image_deletion', **extra: Any
            ) -> dict[str, Any]:
    response = api.post('/v2/images', project=project, json={
        'name': 'encrypted', 'disk_format': 'raw',
        'container_format': 'bare', 'os_encrypt_format': 'LUKSv2',
        'os_encrypt_key_id': key_id,
        'os_encrypt_key_deletion_policy': policy, **extra})
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


def test_create_registers_consumer_delete_removes_it_and_the_secret(
        api: Api, barbican_api: BarbicanApi,
        store: ia_engine.Database) -> None:
    project = uuid.uuid4().hex
    secret = barbican_api.create_secret(project)
    image = _create(api, project, secret)
    assert image['os_encrypt_key_id'] == secret
    consumers = barbican_api.consumers(secret, project)
    assert [(c['service'], c['resource_type'], c['resource_id'])
            for c in consumers] == [('image', 'image', image['id'])]
    row = key_row(store, image['id'])
    assert row is not None
    assert (row['key_id'], row['lifecycle_state']) == (
        secret, 'consumer_registered')

    deleted = api.delete(f"/v2/images/{image['id']}", project=project)
    assert deleted.status_code == 204, deleted.text
    assert barbican_api.secret(secret, project).status_code == 404
    row = key_row(store, image['id'])
    assert row is not None and row['lifecycle_state'] == 'key_deleted'


def test_do_not_delete_keeps_the_secret(
        api: Api, barbican_api: BarbicanApi) -> None:
    project = uuid.uuid4().hex
    secret = barbican_api.create_secret(project)
    image = _create(api, project, secret, policy='do_not_delete')
    assert api.delete(f"/v2/images/{image['id']}",
                      project=project).status_code == 204
    assert barbican_api.secret(secret, project).status_code == 200
    assert barbican_api.consumers(secret, project) == []


def test_secret_shared_by_two_images_survives_the_first_deletion(
        api: Api, barbican_api: BarbicanApi) -> None:
    project = uuid.uuid4().hex
    secret = barbican_api.create_secret(project)
    first = _create(api, project, secret)
    second = _create(api, project, secret)
    assert api.delete(f"/v2/images/{first['id']}",
                      project=project).status_code == 204
    assert barbican_api.secret(secret, project).status_code == 200
    assert [c['resource_id'] for c in
            barbican_api.consumers(secret, project)] == [second['id']]
    assert api.delete(f"/v2/images/{second['id']}",
                      project=project).status_code == 204
    assert barbican_api.secret(secret, project).status_code == 404


@pytest.mark.parametrize('whose', ['missing', 'foreign'])
def test_unreadable_secret_is_400_and_nothing_is_created(
        api: Api, barbican_api: BarbicanApi, glance_with_keys: GlanceServer,
        whose: str) -> None:
    project = uuid.uuid4().hex
    secret = (str(uuid.uuid4()) if whose == 'missing'
              else barbican_api.create_secret(uuid.uuid4().hex))
    image_id = str(uuid.uuid4())
    response = api.post('/v2/images', project=project, json={
        'id': image_id, 'name': 'x', 'os_encrypt_format': 'luks',
        'os_encrypt_key_id': secret})
    assert response.status_code == 400, response.text
    assert 'os_encrypt_key_id' in response.text
    bare = Api(glance_with_keys.bare_url)
    assert bare.get(f'/v2/images/{image_id}',
                    project=project).status_code == 404
    bare.close()


def test_legacy_key_gets_the_deletion_glance_gave_it(
        api: Api, barbican_api: BarbicanApi) -> None:
    project = uuid.uuid4().hex
    secret = barbican_api.create_secret(project)
    response = api.post('/v2/images', project=project, json={
        'name': 'from-cinder', 'cinder_encryption_key_id': secret,
        'cinder_encryption_key_deletion_policy': 'on_image_deletion'})
    assert response.status_code == 201, response.text
    image_id = response.json()['id']
    assert api.delete(f'/v2/images/{image_id}',
                      project=project).status_code == 204
    assert barbican_api.secret(secret, project).status_code == 404


def test_outage_during_delete_is_finished_by_reconcile(
        barbican_api: BarbicanApi, tmp_path_factory: pytest.TempPathFactory,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Barbican down: the image is still deleted (204); ``reconcile``
    releases the key once Barbican is back."""
    from instance_aware.cmd import manage

    own = barbican.BarbicanServer(tmp_path_factory.mktemp('own-barbican'),
                                  max_lifetime=300)
    state = tmp_path_factory.mktemp('glance-outage')
    overrides = Path(state) / 'glance-api.conf.d'
    overrides.mkdir()
    with own:
        (overrides / 'keys.conf').write_text(
            '[instance_aware_keys]\nenabled = true\n'
            'auth_mode = trusted_headers\n'
            '[key_manager]\nbackend = barbican\n'
            f'[barbican]\nbarbican_endpoint = {own.url}\n',
            encoding='utf-8')
        own_api = BarbicanApi(own.url)
        project = uuid.uuid4().hex
        secret = own_api.create_secret(project)
        with GlanceServer(state, max_lifetime=300) as glance:
            api = Api(glance.url)
            image = _create(api, project, secret)
            own.stop()
            deleted = api.delete(f"/v2/images/{image['id']}",
                                 project=project)
            assert deleted.status_code == 204, deleted.text
            assert api.get(f"/v2/images/{image['id']}",
                           project=project).status_code == 404
            api.close()
            engine = ia_engine.create_engine(
                glance.state.instance_aware_db_url)
            row = key_row(ia_engine.Database(engine), image['id'])
            assert row is not None
            assert (row['lifecycle_state'], row['attempts']) == ('failed', 1)
            assert row['last_error'].startswith('on_deleted: ')

            own.start()
            (overrides / 'registry.conf').write_text(
                f'[instance_aware_registry]\nendpoint = {glance.url}\n'
                'trusted_headers = true\n', encoding='utf-8')
            code = manage.main([*glance.state.config_args(), 'reconcile'])
            out, err = capsys.readouterr()
            assert code == 0, err
            assert out.splitlines()[-1] == (
                '1 failed key operations retried: 1 succeeded, '
                '0 failed again, 0 waiting for their image')
            row = key_row(ia_engine.Database(engine), image['id'])
            engine.dispose()
        assert row is not None and row['lifecycle_state'] == 'key_deleted'
        assert own_api.secret(secret, project).status_code == 404
        own_api.close()


# -- both key pairs on one image (issue 17, finding 9) ---------------------


def _consumer_ids(barbican_api: BarbicanApi, secret: str,
                  project: str) -> list[str]:
    return [c['resource_id']
            for c in barbican_api.consumers(secret, project)]


def test_each_key_pair_has_its_own_lifecycle(
        api: Api, barbican_api: BarbicanApi,
        store: ia_engine.Database) -> None:
    """Standard key kept (``do_not_delete``), legacy key deleted with the
    image (``on_image_deletion``, as Glance itself would do)."""
    project = uuid.uuid4().hex
    standard = barbican_api.create_secret(project)
    legacy = barbican_api.create_secret(project)
    image = _create(api, project, standard, policy='do_not_delete',
                    cinder_encryption_key_id=legacy,
                    cinder_encryption_key_deletion_policy=(
                        'on_image_deletion'))
    assert (image['os_encrypt_key_id'],
            image['cinder_encryption_key_id']) == (standard, legacy)
    assert _consumer_ids(barbican_api, standard, project) == [image['id']]
    assert _consumer_ids(barbican_api, legacy, project) == [image['id']]
    rows = {name: key_row(store, image['id'], name)
            for name in ('os_encrypt_key_id', 'cinder_encryption_key_id')}
    assert {name: (row['key_id'], row['deletion_policy'],
                   row['lifecycle_state'])
            for name, row in rows.items() if row is not None} == {
        'os_encrypt_key_id': (standard, 'do_not_delete',
                              'consumer_registered'),
        'cinder_encryption_key_id': (legacy, 'on_image_deletion',
                                     'consumer_registered')}

    deleted = api.delete(f"/v2/images/{image['id']}", project=project)
    assert deleted.status_code == 204, deleted.text
    assert barbican_api.secret(standard, project).status_code == 200
    assert _consumer_ids(barbican_api, standard, project) == []
    assert barbican_api.secret(legacy, project).status_code == 404
    states = {name: key_row(store, image['id'], name)
              for name in ('os_encrypt_key_id', 'cinder_encryption_key_id')}
    assert {name: row['lifecycle_state'] for name, row in states.items()
            if row is not None} == {
        'os_encrypt_key_id': 'consumer_removed',
        'cinder_encryption_key_id': 'key_deleted'}


@pytest.mark.parametrize('whose', ['missing', 'foreign'])
def test_unreadable_legacy_key_beside_a_valid_one_is_400(
        api: Api, barbican_api: BarbicanApi, glance_with_keys: GlanceServer,
        whose: str) -> None:
    project = uuid.uuid4().hex
    standard = barbican_api.create_secret(project)
    legacy = (str(uuid.uuid4()) if whose == 'missing'
              else barbican_api.create_secret(uuid.uuid4().hex))
    image_id = str(uuid.uuid4())
    response = api.post('/v2/images', project=project, json={
        'id': image_id, 'name': 'x', 'os_encrypt_format': 'LUKSv2',
        'os_encrypt_key_id': standard,
        'cinder_encryption_key_id': legacy}, headers={
            'Accept': 'application/json'})
    assert response.status_code == 400, response.text
    assert response.json()['message'].startswith(
        "Invalid value for property 'cinder_encryption_key_id': no secret "
        f"'{legacy}' is available to you in the key manager.")
    bare = Api(glance_with_keys.bare_url)
    assert bare.get(f'/v2/images/{image_id}',
                    project=project).status_code == 404
    bare.close()
    assert _consumer_ids(barbican_api, standard, project) == []


def test_removing_one_pair_drops_only_its_consumer(
        api: Api, barbican_api: BarbicanApi,
        store: ia_engine.Database) -> None:
    """A queued image loses its legacy key: the consumer goes, the secret
    stays (its policy was for the image's deletion), the standard key is
    untouched, and deleting the image no longer deletes the legacy one."""
    project = uuid.uuid4().hex
    standard = barbican_api.create_secret(project)
    legacy = barbican_api.create_secret(project)
    image = _create(api, project, standard,
                    cinder_encryption_key_id=legacy,
                    cinder_encryption_key_deletion_policy=(
                        'on_image_deletion'))
    response = api.patch(
        f"/v2/images/{image['id']}", project=project,
        data=json.dumps([
            {'op': 'remove', 'path': '/cinder_encryption_key_id'},
            {'op': 'remove',
             'path': '/cinder_encryption_key_deletion_policy'}]),
        headers={'Content-Type':
                 'application/openstack-images-v2.1-json-patch'})
    assert response.status_code == 200, response.text
    assert 'cinder_encryption_key_id' not in response.json()
    assert _consumer_ids(barbican_api, legacy, project) == []
    assert _consumer_ids(barbican_api, standard, project) == [image['id']]
    assert key_row(store, image['id'], 'cinder_encryption_key_id') is None

    assert api.delete(f"/v2/images/{image['id']}",
                      project=project).status_code == 204
    assert barbican_api.secret(legacy, project).status_code == 200
    assert barbican_api.secret(standard, project).status_code == 404
