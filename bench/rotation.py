#!/usr/bin/env python3
"""Nova's backup-rotation listing and the query API at scale.

Loads ``--images`` images into a real Glance 33 database and the same
instance relations into the stack's store (bulk SQL, not the API), serves
that Glance twice in one process (with the stack, and bare), then times,
interleaved and over HTTP on 127.0.0.1:

* ``bare``: bare Glance answering Nova's ``_rotate_backups`` listing
  (``?image_type=backup&backup_type=daily&instance_uuid=X&limit=200&
  sort_key=created_at&sort_dir=desc``) from the image properties it stores;
* ``stack``: the same request through the stack, whose Glance never saw
  those keys (they live in the indexed mapping table);
* ``query``: ``GET /v2/instances/X/images?image_type=backup&
  backup_type=daily`` served by the stack.

Every bare answer is compared with the stack's: the run fails if any
differs.  Usage::

    .venv/bin/python bench/rotation.py --images 1000000 --backend sqlite
    .venv/bin/python bench/rotation.py --images 1000000 --backend postgresql

As in GLANCE.md's measurement of bare Glance: 80% of the images belong to
one project (the one the timed requests come from), the rest to
``--projects - 1`` others; each image carries six properties in Glance
(the three captured keys and three ordinary ones); each instance has ten
images (seven daily and two weekly backups, one snapshot), all private,
with distinct creation times.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import requests
import sqlalchemy as sa

from instance_aware.store import migration, models
from tests.local import glance, identity
from tests.local.server import GlanceServer

PER_INSTANCE = 10
KINDS = (['backup'] * 9) + ['snapshot']
BACKUP_TYPES = (['daily'] * 7) + (['weekly'] * 2) + [None]
ORDINARY = (('os_distro', 'ubuntu'), ('os_version', '24.04'),
            ('hw_disk_bus', 'virtio'))
CHUNK = 20_000
BASE_TIME = datetime.datetime(2020, 1, 1)
PG_ADMIN = 'postgresql+psycopg2://postgres@127.0.0.1:5432/postgres'
PG_DATABASES = ('ia_bench_glance', 'ia_bench_store')


def image_id(number: int) -> str:
    return str(uuid.UUID(int=(0xB << 124) + number))


def instance_uuid(number: int) -> str:
    return str(uuid.UUID(int=(0xC << 124) + number, version=4))


def project_of(instance: int, projects: int) -> str:
    """80% of the instances in ``project00000``, the rest spread out."""
    if projects == 1 or instance % 10 < 8:
        return 'project00000'
    return f'project{1 + instance % (projects - 1):05d}'


def rows(images: int, projects: int) -> Iterator[dict[str, Any]]:
    """One dict per image with everything both databases need."""
    for number in range(images):
        instance, slot = divmod(number, PER_INSTANCE)
        yield {
            'number': number,
            'id': image_id(number),
            'owner': project_of(instance, projects),
            'created_at': BASE_TIME + datetime.timedelta(seconds=number),
            'instance_uuid': instance_uuid(instance),
            'image_type': KINDS[slot],
            'backup_type': BACKUP_TYPES[slot],
        }


def chunks(images: int, projects: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows(images, projects):
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _keys(row: dict[str, Any]) -> dict[str, str]:
    keys = {'instance_uuid': row['instance_uuid'],
            'image_type': row['image_type']}
    if row['backup_type']:
        keys['backup_type'] = row['backup_type']
    return keys


def load_glance(url: str, images: int, projects: int) -> None:
    """Images with the instance keys as plain properties (bare Glance)."""
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine, only=['images', 'image_properties'])
    images_t, props_t = meta.tables['images'], meta.tables['image_properties']
    with engine.begin() as conn:
        if engine.dialect.name == 'sqlite':
            conn.exec_driver_sql('PRAGMA synchronous = OFF')
        for chunk in chunks(images, projects):
            conn.execute(images_t.insert(), [{
                'id': r['id'], 'name': f"img-{r['number']}", 'size': 0,
                'status': 'active', 'created_at': r['created_at'],
                'updated_at': r['created_at'], 'deleted': False,
                'disk_format': 'raw', 'container_format': 'bare',
                'owner': r['owner'], 'min_disk': 0, 'min_ram': 0,
                'protected': False, 'visibility': 'private',
                'os_hidden': False} for r in chunk])
            conn.execute(props_t.insert(), [{
                'image_id': r['id'], 'name': name, 'value': value,
                'created_at': r['created_at'], 'deleted': False}
                for r in chunk
                for name, value in [*_keys(r).items(), *ORDINARY]])
    engine.dispose()


def load_store(url: str, images: int, projects: int) -> None:
    """The same relations in the stack's mapping table."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == 'sqlite':
            conn.exec_driver_sql('PRAGMA synchronous = OFF')
        for chunk in chunks(images, projects):
            conn.execute(sa.insert(models.Image), [{
                'id': r['number'] + 1, 'registry_id': 'default',
                'image_id': r['id'], 'project_id': r['owner'],
                'state': models.ACTIVE, 'image_created_at': r['created_at'],
                'created_at': r['created_at'],
                'updated_at': r['created_at']} for r in chunk])
            conn.execute(sa.insert(models.Relation), [{
                'image_ref': r['number'] + 1,
                'instance_uuid': r['instance_uuid'],
                'image_type': r['image_type'],
                'backup_type': r['backup_type'], 'trusted': True,
                'asserted_by': 'nova'} for r in chunk])
            conn.execute(sa.insert(models.Property), [{
                'image_ref': r['number'] + 1, 'concern': models.INSTANCE,
                'name': name, 'value': value,
                'value_index': value[:models.INDEXED_VALUE_LENGTH]}
                for r in chunk for name, value in _keys(r).items()])
        if engine.dialect.name == 'postgresql':
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('ia_images', 'id'), "
                '(SELECT max(id) FROM ia_images))')
    engine.dispose()


def _pg_url(database: str, driver: str = 'psycopg2') -> str:
    return f'postgresql+{driver}://postgres@127.0.0.1:5432/{database}'


def recreate_pg_databases() -> None:
    engine = sa.create_engine(PG_ADMIN, isolation_level='AUTOCOMMIT')
    with engine.connect() as conn:
        for name in PG_DATABASES:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS {name}')
            conn.exec_driver_sql(f'CREATE DATABASE {name}')
    engine.dispose()


def analyze(url: str) -> None:
    """What a cloud's database has sooner or later, now: planner
    statistics, on both databases and on both sides alike.

    PostgreSQL: ``VACUUM (ANALYZE)``, what autovacuum does; vacuumed, the
    first read of every row no longer rewrites its page (hint bits), and
    autovacuum does not start in the middle of the timing.  SQLite:
    ``ANALYZE``, which nothing runs by itself (the deployer guide asks for
    it); with it the stack asks Glance for one ``id=in:`` page instead of
    one show per image (``list_strategy = auto``).
    """
    engine = sa.create_engine(url, isolation_level='AUTOCOMMIT')
    with engine.connect() as conn:
        conn.exec_driver_sql('VACUUM (ANALYZE)'
                             if engine.dialect.name == 'postgresql'
                             else 'ANALYZE')
    engine.dispose()


def set_list_strategy(path: str, strategy: str) -> None:
    """The stack's ``list_strategy`` for this run (``auto``: the default)."""
    conf_d = os.path.join(path, 'glance-api.conf.d')
    os.makedirs(conf_d, exist_ok=True)
    conf_file = os.path.join(conf_d, 'list-strategy.conf')
    with open(conf_file, 'w', encoding='utf-8') as stream:
        stream.write(f'[instance_aware]\nlist_strategy = {strategy}\n')


def prepare_state(path: str, backend: str,
                  fresh: bool = True) -> tuple[str, str]:
    """A state directory whose Glance and store use ``backend``.

    ``fresh`` empties the databases (PostgreSQL: drops and creates them).
    """
    # Glance on psycopg2 (oslo.db's default), the store on psycopg (3), as
    # the deployer guide recommends.
    glance_url = _pg_url(PG_DATABASES[0])
    store_url = _pg_url(PG_DATABASES[1], 'psycopg')
    if backend == 'postgresql':
        if fresh:
            recreate_pg_databases()
        os.makedirs(os.path.join(path, 'glance-api.conf.d'), exist_ok=True)
        with open(os.path.join(path, 'glance-api.conf.d', 'bench.conf'),
                  'w', encoding='utf-8') as stream:
            stream.write(f'[database]\nconnection = {glance_url}\n'
                         f'[instance_aware]\nconnection = {store_url}\n')
    state = glance.prepare(path)
    if backend == 'postgresql':
        engine = sa.create_engine(store_url)
        migration.upgrade(engine)
        engine.dispose()
        return glance_url, store_url
    return state.glance_db_url, state.instance_aware_db_url


def _read_marker(path: str) -> Any:
    try:
        with open(path, encoding='utf-8') as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return None


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
    return ordered[index]


def timed_get(session: requests.Session, url: str,
              headers: dict[str, str], params: dict[str, str]
              ) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    response = session.get(url, headers=headers, params=params, timeout=600)
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise SystemExit(f'{url}: {response.status_code} {response.text}')
    document: dict[str, Any] = response.json()
    return elapsed, document


def _answer(document: dict[str, Any]) -> list[tuple[str, ...]]:
    """What Nova reads of a rotation listing: ids and keys, in order."""
    return [(image['id'], image.get('instance_uuid'),
             image.get('image_type'), image.get('backup_type'))
            for image in document['images']]


def measure(server: GlanceServer, args: argparse.Namespace
            ) -> dict[str, list[float]]:
    instances = args.images // PER_INSTANCE
    rng = random.Random(args.seed)
    busiest = [number for number in range(min(instances, 100_000))
               if project_of(number, args.projects) == 'project00000']
    picks = [rng.choice(busiest)
             for _ in range(args.samples + args.warmup)]
    times: dict[str, list[float]] = {'stack': [], 'query': [], 'bare': []}
    session = requests.Session()
    for turn, instance in enumerate(picks):
        warm = turn < args.warmup
        uuid_ = instance_uuid(instance)
        headers = identity.identity_headers(
            project_of(instance, args.projects))
        rotation = {'image_type': 'backup', 'backup_type': 'daily',
                    'instance_uuid': uuid_, 'limit': '200',
                    'sort_key': 'created_at', 'sort_dir': 'desc'}
        took, stacked = timed_get(session, server.url + '/v2/images',
                                  headers, rotation)
        expected = [image_id(instance * PER_INSTANCE + slot)
                    for slot in reversed(range(7))]
        got = [image['id'] for image in stacked['images']]
        if got != expected:
            raise SystemExit(f'stack answered {got}, expected {expected}')
        if not warm:
            times['stack'].append(took)
        took, listed = timed_get(
            session, f'{server.url}/v2/instances/{uuid_}/images', headers,
            {'image_type': 'backup', 'backup_type': 'daily'})
        if [e['image_id'] for e in listed['images']] != expected:
            raise SystemExit(f'query API answered {listed}')
        if not warm:
            times['query'].append(took)
        if not warm and len(times['bare']) < args.bare_samples:
            took, bare = timed_get(session, server.bare_url + '/v2/images',
                                   headers, rotation)
            if _answer(bare) != _answer(stacked):
                raise SystemExit('bare Glance and the stack differ for '
                                 f'instance {uuid_}')
            times['bare'].append(took)
    session.close()
    return times


def report(times: dict[str, list[float]], args: argparse.Namespace,
           load_seconds: float) -> dict[str, Any]:
    summary: dict[str, Any] = {
        'backend': args.backend, 'images': args.images,
        'projects': args.projects, 'load_seconds': round(load_seconds, 1),
        'analyzed': not args.no_analyze,
        'list_strategy': args.list_strategy}
    print(f'\n{args.images:,} images (80% in the caller\'s project), '
          f'{args.projects} projects, {args.backend}'
          f'{"" if args.no_analyze else " (analyzed)"}, list_strategy '
          f'{args.list_strategy}; loaded in {load_seconds:.0f} s')
    print(f"{'request':<34}{'n':>5}{'p50 ms':>10}{'p99 ms':>10}")
    labels = {'bare': 'rotation listing, bare Glance',
              'stack': 'rotation listing, through stack',
              'query': 'query API (stack)'}
    for name in ('bare', 'stack', 'query'):
        samples = times[name]
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        summary[name] = {'n': len(samples), 'p50_ms': round(p50, 2),
                         'p99_ms': round(p99, 2),
                         'mean_ms': round(statistics.fmean(samples), 2)}
        print(f'{labels[name]:<34}{len(samples):>5}{p50:>10.1f}'
              f'{p99:>10.1f}')
    bare50 = summary['bare']['p50_ms']
    for name in ('stack', 'query'):
        ratio = bare50 / summary[name]['p50_ms']
        summary[name]['speedup_vs_bare_p50'] = round(ratio, 1)
        print(f'{labels[name]}: {ratio:.1f}x faster than bare Glance (p50)')
    print('every sampled answer of the stack equals bare Glance\'s')
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=100_000)
    parser.add_argument('--projects', type=int, default=100)
    parser.add_argument('--backend', choices=('sqlite', 'postgresql'),
                        default='sqlite')
    parser.add_argument('--samples', type=int, default=200,
                        help='timed stack and query API requests')
    parser.add_argument('--bare-samples', type=int, default=10,
                        help='timed bare Glance requests (slow at scale)')
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--seed', type=int, default=42)
    parser.add_argument('--state-dir', help='default: a temporary one')
    parser.add_argument('--reuse', action='store_true',
                        help='with --state-dir: keep what an earlier run '
                        'loaded there with the same --images, --projects '
                        'and --backend (time again without reloading)')
    parser.add_argument('--list-strategy', default='auto',
                        choices=('auto', 'shows', 'registry'),
                        help="the stack's list_strategy option")
    parser.add_argument('--no-analyze', action='store_true',
                        help='load without planner statistics (SQLite as '
                        'Glance leaves it; a loaded state keeps what it '
                        'was loaded with)')
    parser.add_argument('--json', help='also write the summary here')
    args = parser.parse_args(argv)
    if args.images < PER_INSTANCE * args.projects:
        parser.error('--images must give every project an instance')
    if args.reuse and not args.state_dir:
        parser.error('--reuse needs --state-dir')
    with tempfile.TemporaryDirectory(prefix='ia-bench-') as tmp:
        path = args.state_dir or tmp
        loaded = {'images': args.images, 'projects': args.projects,
                  'backend': args.backend,
                  'analyzed': not args.no_analyze}
        marker = os.path.join(path, 'bench-loaded.json')
        reuse = args.reuse and _read_marker(marker) == loaded
        start = time.perf_counter()
        glance_url, store_url = prepare_state(path, args.backend,
                                              fresh=not reuse)
        if reuse:
            print(f'reusing {args.images:,} images loaded in {path}',
                  file=sys.stderr)
        else:
            if os.path.exists(marker):
                os.unlink(marker)
            print(f'loading {args.images:,} images into Glance and the '
                  'store', file=sys.stderr)
            load_glance(glance_url, args.images, args.projects)
            load_store(store_url, args.images, args.projects)
            if not args.no_analyze:
                analyze(glance_url)
                analyze(store_url)
            with open(marker, 'w', encoding='utf-8') as stream:
                json.dump(loaded, stream)
        load_seconds = time.perf_counter() - start
        set_list_strategy(path, args.list_strategy)
        with GlanceServer(path, workers=1, threads=4, access_log=False,
                          max_lifetime=7200) as server:
            times = measure(server, args)
        summary = report(times, args, load_seconds)
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as stream:
            json.dump(summary, stream, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
