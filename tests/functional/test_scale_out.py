"""Scale-out (issue #6): two API nodes, one Glance database, one store.

Two gunicorn servers, each a Glance with the stack in its pipeline and
several worker processes and threads, share one Glance database and one
mapping database on PostgreSQL, then on MariaDB: what a deployment behind
a load balancer runs.  Many client threads create, patch and delete the
backups of ONE instance (the same ``instance_uuid``, so every write meets
the others in the same index ranges) through both nodes at once, some of
them racing on the same image: the same id created on both nodes, the
same patch sent to both, the same delete sent to both.  Nova's rotation
listing runs while they do.

Afterwards Glance (its bare pipeline), the mapping database and both
nodes must agree: one active record per image Glance has, with the
values the last patch left; every deleted image kept as ``deleted``
history; nothing pending, nothing twice; the rotation listing through
either node is exactly the live daily backups, in Glance's order.  No
request may have failed with a 500 or a conflict the store should have
retried.

Real deadlocks depend on timing (these runs often see none), so the
churn runs a second time with one image-row write in :data:`FAIL_EVERY`
failing with the server's own deadlock error (:mod:`tests.races`): the
nodes must retry every one, and nobody may notice.

The servers bind 127.0.0.1 and stop by themselves (parent gone, or
:data:`LIFETIME` over).  Database servers follow :mod:`tests.dbbackends`:
unreachable means skipped on a laptop, failed with ``CI=true``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import pathlib
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from instance_aware.store import engine as ia_engine
from instance_aware.store import migration, models
from tests.dbbackends import MYSQL, POSTGRESQL, throwaway_database
from tests.functional.conftest import Api
from tests.local.server import GlanceServer
from tests.races import DEADLOCK, Injector, Race

pytestmark = [pytest.mark.functional, pytest.mark.timeout(240)]

#: Per node: gunicorn worker processes, and threads per worker.
WORKERS, THREADS = 2, 4
#: Seconds a node lives at most, whatever happens to this process.
LIFETIME = 600
#: Client threads driving the lifecycles (twin requests use 2x more).
CLIENTS = 12
#: Images that go create -> patch (from both nodes) -> maybe delete.
LIFECYCLES = 24
#: Image ids created on both nodes at the same moment.
DUPLICATES = 6
#: Nova's rotation listings run during the churn.
ROTATIONS = 8

PATCH21 = 'application/openstack-images-v2.1-json-patch'
INSTANCE_KEYS = ('instance_uuid', 'image_type', 'backup_type', 'user_id',
                 'base_image_ref', 'image_state')
ROTATION = {'instance_uuid': None, 'image_type': 'backup',
            'backup_type': 'daily'}
#: What a node logs for each retried race (store/retry.py).
RETRIED = 'transaction lost a race'
#: One image-row write in so many fails in the injection test; with
#: ``db_max_retries = 10`` a write fails for good with odds of 5**-10.
FAIL_EVERY = 5
MAX_RETRIES = 10


@dataclasses.dataclass
class Cluster:
    """Two API nodes on one Glance database and one mapping database."""

    backend: str
    nodes: list[GlanceServer]
    store: sa.Engine
    apis: list[Api] = dataclasses.field(default_factory=list)

    def log_of(self, node: GlanceServer) -> str:
        return pathlib.Path(node.log_file).read_text(errors='replace')


def _node_config(state: pathlib.Path, glance_url: str,
                 store_url: str) -> None:
    """Point a node's Glance and stack at the shared databases (a
    ``glance-api.conf.d`` file, which ``prepare`` never rewrites)."""
    conf_d = state / 'glance-api.conf.d'
    conf_d.mkdir(parents=True)
    (conf_d / 'scale-out.conf').write_text(
        f'[database]\nconnection = {glance_url}\n'
        f'[instance_aware]\nconnection = {store_url}\n'
        f'db_max_retries = {MAX_RETRIES}\n', encoding='utf-8')


@pytest.fixture(scope='module', params=[
    pytest.param(POSTGRESQL, id=POSTGRESQL, marks=pytest.mark.database),
    pytest.param(MYSQL, id=MYSQL, marks=pytest.mark.database)])
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    backend: str = request.param
    base = tmp_path_factory.mktemp(f'scale-out-{backend}')
    with throwaway_database(backend, base) as glance_url, \
            throwaway_database(backend, base) as store_url:
        store = ia_engine.create_engine(store_url)
        migration.upgrade(store)
        try:
            with contextlib.ExitStack() as running:
                nodes = []
                for number in range(2):
                    state = base / f'node{number}'
                    _node_config(state, glance_url, store_url)
                    # One after the other: each runs glance-manage db_sync
                    # on the shared database before serving.
                    nodes.append(running.enter_context(GlanceServer(
                        state, workers=WORKERS, threads=THREADS,
                        bare=number == 0, max_lifetime=LIFETIME,
                        access_log=False)))
                cluster = Cluster(backend, nodes, store,
                                  [Api(node.url) for node in nodes])
                yield cluster
                for api in cluster.apis:
                    api.close()
        finally:
            store.dispose()


# -- the workload ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    """One request of the workload and what came back."""

    what: str
    node: int
    image_id: str
    status: int
    body: Any


class Workload:
    """Backups of one instance, written through both nodes at once."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.project = uuid.uuid4().hex
        self.instance = str(uuid.uuid4())
        self.base_image = str(uuid.uuid4())
        self.calls: list[Call] = []
        #: Images a rotation listing gave without their keys.
        self.keyless: list[str] = []
        self._lock = threading.Lock()
        #: Image id -> instance keys it must have in the end.
        self.live: dict[str, dict[str, str]] = {}
        #: Image id -> instance keys it had when deleted.
        self.deleted: dict[str, dict[str, str]] = {}
        #: Image id -> the name Glance must have.
        self.names: dict[str, str] = {}
        # Two per client thread: a twin never waits for a free thread
        # while its partner waits for it at the barrier.
        self.twins = concurrent.futures.ThreadPoolExecutor(
            2 * CLIENTS, thread_name_prefix='twin')

    # -- requests --------------------------------------------------------

    def _send(self, what: str, node: int, image_id: str, method: str,
              path: str, **kwargs: Any) -> Call:
        # One session per call: requests.Session is not thread-safe.
        api = Api(self.cluster.nodes[node].url)
        headers = {'Accept': 'application/json',
                   **kwargs.pop('headers', {})}
        try:
            response = api.request(method, path, project=self.project,
                                   service=True, headers=headers, **kwargs)
        finally:
            api.close()
        call = Call(what, node, image_id, response.status_code,
                    _body(response))
        with self._lock:
            self.calls.append(call)
        return call

    def _on_both(self, send: Callable[[int], Call]) -> list[Call]:
        """The same request on both nodes at the same moment."""
        start = threading.Barrier(2, timeout=30)

        def at_once(node: int) -> Call:
            start.wait()
            return send(node)

        futures = [self.twins.submit(at_once, node) for node in (0, 1)]
        return [future.result(timeout=120) for future in futures]

    def keys(self, number: int, **changes: str) -> dict[str, str]:
        return {'instance_uuid': self.instance, 'image_type': 'backup',
                'backup_type': 'daily', 'user_id': f'user-{number}',
                'base_image_ref': self.base_image, **changes}

    def create(self, what: str, node: int, image_id: str, name: str,
               keys: dict[str, str]) -> Call:
        return self._send(what, node, image_id, 'POST', '/v2/images',
                          json={'id': image_id, 'name': name,
                                'disk_format': 'qcow2',
                                'container_format': 'bare', **keys})

    # -- scenarios -------------------------------------------------------

    def lifecycle(self, number: int) -> None:
        """Create on one node; patch from both; delete from both (some)."""
        image_id = str(uuid.uuid4())
        node = number % 2
        keys = self.keys(number)
        created = self.create('create', node, image_id, f'backup-{number}',
                              keys)
        _expect_image(created, 201, image_id, f'backup-{number}', keys)

        name = f'backup-{number}-rotated'
        final = {**keys, 'user_id': f'user-{number}-checked',
                 'image_state': 'available'}
        ops = [{'op': 'replace', 'path': '/name', 'value': name},
               {'op': 'replace', 'path': '/user_id',
                'value': final['user_id']},
               {'op': 'add', 'path': '/image_state', 'value': 'available'}]
        if number % 3 == 0:  # leaves the daily rotation
            final['backup_type'] = 'weekly'
            ops.append({'op': 'replace', 'path': '/backup_type',
                        'value': 'weekly'})
        for patched in self._on_both(lambda n: self._send(
                'patch', n, image_id, 'PATCH', f'/v2/images/{image_id}',
                json=ops, headers={'Content-Type': PATCH21})):
            _expect_image(patched, 200, image_id, name, final)

        with self._lock:
            self.names[image_id] = name
        if number % 4 in (1, 2):
            deletes = self._on_both(lambda n: self._send(
                'delete', n, image_id, 'DELETE', f'/v2/images/{image_id}'))
            assert 204 in [d.status for d in deletes], deletes
            for delete in deletes:
                _expect_deleted(delete, image_id)
            with self._lock:
                self.deleted[image_id] = final
        else:
            with self._lock:
                self.live[image_id] = final

    def duplicate(self, number: int) -> None:
        """One image id created on both nodes at once: one 201, one 409."""
        image_id = str(uuid.uuid4())
        name = f'twin-{number}'
        calls = self._on_both(lambda n: self.create(
            'duplicate', n, image_id, name,
            self.keys(number, user_id=f'node{n}-user')))
        assert sorted(c.status for c in calls) == [201, 409], calls
        for call in calls:
            keys = self.keys(number, user_id=f'node{call.node}-user')
            if call.status == 201:
                _expect_image(call, 201, image_id, name, keys)
                with self._lock:
                    self.live[image_id] = keys
                    self.names[image_id] = name
            else:
                # Glance's own words for a duplicate id (webob adds
                # line breaks after the explanation).
                assert (call.body['code'], call.body['title']) == (
                    '409 Conflict', 'Conflict'), call
                assert call.body['message'].startswith(
                    f'Image ID {image_id} already exists!'), call

    def rotation(self, number: int) -> None:
        """Nova's rotation listing while the others write."""
        params = {**ROTATION, 'instance_uuid': self.instance, 'limit': '200',
                  'sort_key': 'created_at', 'sort_dir': 'desc'}
        call = self._send('rotation', number % 2, '', 'GET', '/v2/images',
                          params=params)
        assert call.status == 200, call
        for image in call.body['images']:
            assert image['owner'] == self.project, image
            if image.get('instance_uuid') == self.instance:
                assert image['image_type'] == 'backup', image
                continue
            # Listed while being deleted: matched in the store, found in
            # Glance, then marked deleted before its keys were given back.
            # Checked against the deletes once they are all done.
            assert not set(INSTANCE_KEYS) & set(image), image
            with self._lock:
                self.keyless.append(image['id'])

    def run(self) -> None:
        tasks: list[Callable[[], None]] = []
        for number in range(LIFECYCLES):
            tasks.append(lambda n=number: self.lifecycle(n))
            if number % (LIFECYCLES // DUPLICATES) == 0:
                tasks.append(lambda n=number: self.duplicate(n))
            if number % (LIFECYCLES // ROTATIONS) == 1:
                tasks.append(lambda n=number: self.rotation(n))
        try:
            with concurrent.futures.ThreadPoolExecutor(
                    CLIENTS, thread_name_prefix='client') as pool:
                futures = [pool.submit(task) for task in tasks]
                for future in futures:
                    future.result(timeout=180)
        finally:
            self.twins.shutdown(wait=True)


def _body(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _expect_image(call: Call, status: int, image_id: str, name: str,
                  keys: dict[str, str]) -> None:
    """A create or update answer: Glance's image, our keys given back."""
    assert call.status == status, call
    image = call.body
    assert (image['id'], image['name'], image['status']) == (
        image_id, name, 'queued'), call
    assert {k: image.get(k) for k in INSTANCE_KEYS if k in image} == keys, \
        call


def _expect_deleted(call: Call, image_id: str) -> None:
    """A delete answer: 204 empty, or what Glance itself answers the
    loser of two deletes: 404 once the image is gone, 400 while the
    twin's delete is under way (bare Glance does the same)."""
    if call.status == 204:
        assert call.body is None, call
        return
    if call.status == 400:
        assert call.body['message'].startswith(
            'Image status transition from deleted to deleted is not '
            'allowed'), call
        return
    assert call.status == 404, call
    assert image_id in call.body['message'], call


# -- what everyone must agree on afterwards ----------------------------------


def _store_rows(engine: sa.Engine, project: str
                ) -> dict[str, dict[str, Any]]:
    """Every image record of ``project``: state, values, relations."""
    rows: dict[str, dict[str, Any]] = {}
    by_ref: dict[int, dict[str, Any]] = {}
    with engine.connect() as conn:
        for ref, image_id, state, deleted_at in conn.execute(sa.select(
                models.Image.id, models.Image.image_id, models.Image.state,
                models.Image.deleted_at).where(
                models.Image.registry_id == 'default',
                models.Image.project_id == project)):
            assert image_id not in rows, f'{image_id} recorded twice'
            rows[image_id] = by_ref[ref] = {
                'state': state, 'deleted_at': deleted_at, 'values': {},
                'relations': []}
        for ref, concern, name, value in conn.execute(sa.select(
                models.Property.image_ref, models.Property.concern,
                models.Property.name, models.Property.value).where(
                models.Property.image_ref.in_(list(by_ref)))):
            assert concern == models.INSTANCE
            by_ref[ref]['values'][name] = value
        for ref, instance, image_type, backup_type in conn.execute(
                sa.select(models.Relation.image_ref,
                          models.Relation.instance_uuid,
                          models.Relation.image_type,
                          models.Relation.backup_type).where(
                    models.Relation.image_ref.in_(list(by_ref)))):
            by_ref[ref]['relations'].append(
                (instance, image_type, backup_type))
    return rows


def _listing(api: Api, project: str, params: dict[str, str]
             ) -> list[dict[str, Any]]:
    """Every page of a list, following ``next`` as glanceclient does."""
    images: list[dict[str, Any]] = []
    response = api.get('/v2/images', project=project, service=True,
                       params=params)
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        images += page['images']
        if 'next' not in page:
            return images
        response = api.get(page['next'], project=project, service=True)


def _log_count(cluster: Cluster, text: str) -> int:
    return sum(cluster.log_of(node).count(text) for node in cluster.nodes)


def _check_agreement(cluster: Cluster, work: Workload) -> None:
    """Every answer, Glance, the store and both nodes agree."""
    # No 500, no race surfacing as a 409: every answer was one of those
    # the scenarios expect (their bodies were checked as they came).
    expected = {'create': {201}, 'patch': {200}, 'delete': {204, 400, 404},
                'duplicate': {201, 409}, 'rotation': {200}}
    unexpected = [c for c in work.calls if c.status not in expected[c.what]]
    assert unexpected == []
    counts = collections.Counter(c.what for c in work.calls)
    assert counts == {'create': LIFECYCLES, 'patch': 2 * LIFECYCLES,
                      'delete': 2 * len(work.deleted),
                      'duplicate': 2 * DUPLICATES, 'rotation': ROTATIONS}
    refused = [c for c in work.calls if c.status == 409]
    assert len(refused) == DUPLICATES
    assert {c.what for c in refused} == {'duplicate'}
    assert len(work.live) == LIFECYCLES - len(work.deleted) + DUPLICATES
    assert set(work.keyless) <= set(work.deleted)

    # Glance itself (the bare pipeline): exactly the live images, with the
    # names the patches left and none of the instance keys.
    bare = Api(cluster.nodes[0].bare_url)
    try:
        glance = _listing(bare, work.project, {'limit': '1000'})
        assert {i['id'] for i in glance} == set(work.live)
        for image in glance:
            assert image['name'] == work.names[image['id']], image
            assert not set(INSTANCE_KEYS) & set(image), image
        daily = {i for i, keys in work.live.items()
                 if keys['backup_type'] == 'daily'}
        # Glance's own order of those images (created_at, then id, desc).
        glance_order = [i['id'] for i in _listing(
            bare, work.project, {'id': 'in:' + ','.join(sorted(daily)),
                                 'limit': '1000'})]
    finally:
        bare.close()
    assert set(glance_order) == daily

    # The mapping database: one record per image ever created, exactly one
    # relation each, active for the live ones, deleted history for the
    # others, nothing pending, the values of the last patch.
    rows = _store_rows(cluster.store, work.project)
    assert set(rows) == set(work.live) | set(work.deleted)
    for image_id, row in rows.items():
        gone = image_id in work.deleted
        keys = work.deleted[image_id] if gone else work.live[image_id]
        assert row['state'] == (models.DELETED if gone else models.ACTIVE)
        assert (row['deleted_at'] is not None) is gone, row
        assert row['values'] == keys, (image_id, row)
        assert row['relations'] == [(work.instance, 'backup',
                                     keys['backup_type'])], row

    # The rotation listing through either node: exactly the live daily
    # backups, in Glance's order, every key given back; the same with
    # Nova's parameters, and when paged.
    rotation = {**ROTATION, 'instance_uuid': work.instance}
    for api in cluster.apis:
        for params in ({**rotation},
                       {**rotation, 'limit': '200', 'sort_key': 'created_at',
                        'sort_dir': 'desc'},
                       {**rotation, 'limit': '4'}):
            listed = _listing(api, work.project, params)
            assert [i['id'] for i in listed] == glance_order, params
            for image in listed:
                assert {k: image[k] for k in INSTANCE_KEYS if k in image} \
                    == work.live[image['id']], image
                assert image['name'] == work.names[image['id']]

    # The query API answers from the store alone: the same live set, and
    # the deleted backups as history.
    response = cluster.apis[1].get(
        f'/v2/instances/{work.instance}/images', project=work.project,
        service=True, params={'include_deleted': 'true', 'limit': '1000'})
    assert response.status_code == 200, response.text
    entries = {e['image_id']: e for e in response.json()['images']}
    assert set(entries) == set(rows)
    for image_id, entry in entries.items():
        gone = image_id in work.deleted
        assert entry['status'] == ('deleted' if gone else 'active'), entry
        assert entry['properties'] == (work.deleted[image_id] if gone
                                       else work.live[image_id]), entry

    # Nothing went wrong quietly either: no traceback, no race that used
    # up its retries.
    for text in ('Traceback', 'DB exceeded retry limit',
                 'Mapping database conflict'):
        assert _log_count(cluster, text) == 0, text


def test_two_nodes_many_workers_one_instance(cluster: Cluster) -> None:
    """The churn as it comes: whatever races the servers see are
    retried (how many depends on timing; often none)."""
    retried = _log_count(cluster, RETRIED)
    work = Workload(cluster)
    work.run()
    _check_agreement(cluster, work)
    print(f'{cluster.backend}: {len(work.calls)} requests, '
          f'{_log_count(cluster, RETRIED) - retried} races retried, '
          f'{len(work.keyless)} images listed while deleted')


def test_lost_races_are_retried_across_nodes(cluster: Cluster) -> None:
    """The same churn while one image-row write in :data:`FAIL_EVERY`
    loses a race: every one is retried inside the node, no client sees
    it, and everyone still agrees."""
    injector = Injector(cluster.store,
                        Race(cluster.backend, DEADLOCK[cluster.backend]))
    retried = _log_count(cluster, RETRIED)
    injector.arm(every=FAIL_EVERY)
    try:
        work = Workload(cluster)
        work.run()
        injected = injector.attempts() // FAIL_EVERY
    finally:
        injector.disarm()
    assert injected >= 5, injected
    assert _log_count(cluster, RETRIED) - retried >= injected
    _check_agreement(cluster, work)
    print(f'{cluster.backend}: {len(work.calls)} requests, {injected} '
          'injected races retried')
