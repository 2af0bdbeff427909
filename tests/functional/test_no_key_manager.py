"""Encrypted images on a deployment without a key manager.

The key lifecycle is on (its default) but neither ``[barbican]
barbican_endpoint`` nor ``auth_endpoint`` is set, as in a Glance that
never deployed Barbican: the start-up log says so, naming the option, and
an encrypted image is refused with a 400 that says why, not a 503 that
invites retries.  Nothing reaches Glance.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from instance_aware.filters.encryption_properties import (
    EncryptionPropertiesFilter,
)
from tests.functional.conftest import Api
from tests.local.server import GlanceServer


@pytest.fixture(scope='module')
def server(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[GlanceServer]:
    state = tmp_path_factory.mktemp('no-key-manager')
    overrides = Path(state) / 'glance-api.conf.d'
    overrides.mkdir()
    (overrides / 'keys.conf').write_text(
        '[instance_aware_keys]\nenabled = true\n', encoding='utf-8')
    with GlanceServer(state, max_lifetime=300) as glance:
        yield glance


def test_start_up_log_names_the_missing_option(server: GlanceServer) -> None:
    log = Path(server.state.log_file).read_text(encoding='utf-8')
    lines = [line for line in log.splitlines()
             if 'Encrypted images will be refused (400)' in line]
    assert lines, log[-2000:]
    assert ' ERROR ' in lines[0]
    assert ('neither [barbican] barbican_endpoint nor [barbican] '
            'auth_endpoint is set') in lines[0]


@pytest.mark.parametrize('key', ['os_encrypt_key_id',
                                 'cinder_encryption_key_id'])
def test_encrypted_image_is_a_400_that_says_why(
        server: GlanceServer, key: str) -> None:
    project = uuid.uuid4().hex
    image_id = str(uuid.uuid4())
    properties = {key: str(uuid.uuid4())}
    if key == 'os_encrypt_key_id':
        properties['os_encrypt_format'] = 'luks'
    api = Api(server.url)
    bare = Api(server.bare_url)
    try:
        response = api.post('/v2/images', project=project, json={
            'id': image_id, 'name': 'encrypted', **properties})
        assert response.status_code == 400, response.text
        assert EncryptionPropertiesFilter.NO_KEY_MANAGER in response.text
        assert 'Retry' not in response.text
        assert 'Retry-After' not in response.headers
        assert bare.get(f'/v2/images/{image_id}',
                        project=project).status_code == 404
        # An image without encryption properties is not affected.
        plain = api.post('/v2/images', project=project,
                         json={'name': 'plain'})
        assert plain.status_code == 201, plain.text
        assert plain.json()['name'] == 'plain'
    finally:
        api.close()
        bare.close()
