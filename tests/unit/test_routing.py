"""Route classification must not depend on how a path is spelled."""

from __future__ import annotations

import pytest

from instance_aware.http import routing

IMG = '6e1b3a5c-2f4e-4b8a-9c1d-0a1b2c3d4e5f'


@pytest.mark.parametrize('method,path,name,params', [
    pytest.param('GET', '/v2/images', 'images', {}, id='list'),
    pytest.param('POST', '/v2/images', 'images', {}, id='create'),
    pytest.param('GET', '/v2.1/images/', 'images', {}, id='minor-trailing'),
    pytest.param('GET', '//v2//IMAGES', 'images', {}, id='case-doubled'),
    pytest.param('GET', '/V2.17/images', 'images', {}, id='upper-version'),
    pytest.param('GET', '/v2/%69mages', 'images', {}, id='escaped'),
    pytest.param('GET', '/v2/%2569mages', 'images', {}, id='double-escaped'),
    pytest.param('PATCH', f'/v2/images/{IMG}', 'image',
                 {'image_id': IMG}, id='patch'),
    pytest.param('DELETE', f'/v2/./images/{IMG}/', 'image',
                 {'image_id': IMG}, id='dot-segment'),
    pytest.param('PUT', f'/v2/images/{IMG}/file', 'image_file',
                 {'image_id': IMG}, id='upload'),
    pytest.param('POST', f'/v2/images/{IMG}/Locations', 'image_locations',
                 {'image_id': IMG}, id='locations-case'),
    pytest.param('GET', f'/v2/images/{IMG}/tasks', 'image_tasks',
                 {'image_id': IMG}, id='tasks'),
    pytest.param('GET', f'/v2/instances/{IMG}/images', 'instance_images',
                 {'instance_uuid': IMG}, id='query-api'),
    pytest.param('POST', f'/v2/images/{IMG}', None, {}, id='wrong-method'),
    pytest.param('GET', '/versions', None, {}, id='versions'),
])
def test_match(method, path, name, params):
    route = routing.match(method, path)
    assert route.name == name
    assert route.params == params


def test_image_ids_keep_their_case():
    assert routing.match('GET', '/v2/images/AbC').image_id == 'AbC'
