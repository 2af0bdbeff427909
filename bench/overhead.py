#!/usr/bin/env python3
"""Latency of everyday metadata calls through the stack vs bare Glance.

One Glance 33 (gunicorn, one worker, four threads, SQLite) serves the same
database twice: through the stack and bare.  Each operation is timed
``--samples`` times on both, alternating stack and bare request by request
so that drift on a noisy machine hits both alike; the script prints the
median and p99 of each and their ratio (stack / bare).  Usage::

    .venv/bin/python bench/overhead.py [--samples 300] [--images 500]

Operations: show, list (limit 25 and 100), Nova's rotation listing (seven
daily backups of one instance among the others), create, patch (replace
name), delete.  The images carry Nova's instance keys, so the stack does
its real work (stripping, storing, giving back) on every call.

``--standalone`` also times the stack run as its own service
(``./tools/dev serve --upstream``) in front of the same bare Glance,
against that bare Glance: one more HTTP hop (target ratio 1.15).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from importlib import metadata
from typing import Any

import requests

from tests.local import identity
from tests.local.server import GlanceServer, StandaloneServer

PROJECT = 'bench-project'
PATCH = 'application/openstack-images-v2.1-json-patch'


def _nova_keys(instance: str | None = None) -> dict[str, str]:
    return {'instance_uuid': instance or str(uuid.uuid4()),
            'image_type': 'backup', 'backup_type': 'daily', 'user_id': 'u',
            'owner_id': PROJECT, 'os_distro': 'ubuntu'}


def _rotation(instance: str) -> str:
    return ('/v2/images?image_type=backup&backup_type=daily'
            f'&instance_uuid={instance}&limit=200&sort_key=created_at'
            '&sort_dir=desc')


class Side:
    """One endpoint (stack or bare) with its own session and samples."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.session = requests.Session()
        self.session.headers.update(identity.identity_headers(PROJECT))
        self.times: dict[str, list[float]] = {}

    def timed(self, op: str, method: str, path: str, expect: int,
              **kwargs: Any) -> requests.Response:
        start = time.perf_counter()
        response = self.session.request(method, self.url + path,
                                        timeout=60, **kwargs)
        took = (time.perf_counter() - start) * 1000
        if response.status_code != expect:
            raise SystemExit(f'{self.name} {method} {path}: '
                             f'{response.status_code} {response.text}')
        self.times.setdefault(op, []).append(took)
        return response


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1,
                       round(fraction * (len(ordered) - 1)))]


def run(stack: Side, bare: Side, args: argparse.Namespace) -> None:
    ids: dict[str, list[str]] = {stack.name: [], bare.name: []}
    rotated = {stack.name: str(uuid.uuid4()), bare.name: str(uuid.uuid4())}
    for number in range(args.images):  # background population, not timed
        for side in (stack, bare):
            instance = rotated[side.name] if number < 7 else None
            created = side.session.post(side.url + '/v2/images', timeout=60,
                                        json={'name': 'seed',
                                              **_nova_keys(instance)})
            ids[side.name].append(created.json()['id'])
    ops: list[tuple[str, Callable[[Side, int], object]]] = [
        ('show', lambda side, n: _check(side.timed(
            'show', 'GET', f'/v2/images/{ids[side.name][n % args.images]}',
            200), 'image_type', 'backup')),
        ('list 25', lambda side, n: side.timed(
            'list 25', 'GET', '/v2/images?limit=25', 200)),
        ('list 100', lambda side, n: side.timed(
            'list 100', 'GET', '/v2/images?limit=100', 200)),
        ('rotation', lambda side, n: _check_count(side.timed(
            'rotation', 'GET', _rotation(rotated[side.name]), 200), 7)),
    ]
    for turn in range(args.warmup + args.samples):
        for _name, op in ops:
            for side in ((stack, bare) if turn % 2 else (bare, stack)):
                op(side, turn)
    for turn in range(args.warmup + args.samples):
        for side in ((stack, bare) if turn % 2 else (bare, stack)):
            created = side.timed('create', 'POST', '/v2/images', 201,
                                 json={'name': 'c', **_nova_keys()})
            image_id = created.json()['id']
            _check(created, 'image_type', 'backup')
            patched = side.timed(
                'patch', 'PATCH', f'/v2/images/{image_id}', 200,
                data=json.dumps([{'op': 'replace', 'path': '/name',
                                  'value': 'renamed'}]),
                headers={'Content-Type': PATCH})
            _check(patched, 'name', 'renamed')
            side.timed('delete', 'DELETE', f'/v2/images/{image_id}', 204)
    for side in (stack, bare):
        for values in side.times.values():
            del values[:args.warmup]


def _check_count(response: requests.Response, count: int) -> None:
    images = response.json()['images']
    if len(images) != count or any(
            image.get('backup_type') != 'daily' for image in images):
        raise SystemExit(f'{response.url}: not the {count} daily backups')


def _check(response: requests.Response, key: str, value: str) -> None:
    if response.json().get(key) != value:
        raise SystemExit(f'{response.url}: {key} is not {value!r}')


def report(stack: Side, bare: Side) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    print(f'\n{stack.name} against {bare.name}:')
    print(f"{'operation':<10}{'bare p50':>10}{'stack p50':>11}{'ratio':>7}"
          f"{'bare p99':>10}{'stack p99':>11}{'ratio':>7}")
    for op in stack.times:
        s, b = stack.times[op], bare.times[op]
        row = {
            'n': len(s),
            'bare_p50_ms': percentile(b, 0.5),
            'stack_p50_ms': percentile(s, 0.5),
            'bare_p99_ms': percentile(b, 0.99),
            'stack_p99_ms': percentile(s, 0.99),
        }
        row['p50_ratio'] = row['stack_p50_ms'] / row['bare_p50_ms']
        row['p99_ratio'] = row['stack_p99_ms'] / row['bare_p99_ms']
        summary[op] = {k: round(v, 3) if isinstance(v, float) else v
                       for k, v in row.items()}
        print(f"{op:<10}{row['bare_p50_ms']:>10.2f}"
              f"{row['stack_p50_ms']:>11.2f}{row['p50_ratio']:>7.2f}"
              f"{row['bare_p99_ms']:>10.2f}{row['stack_p99_ms']:>11.2f}"
              f"{row['p99_ratio']:>7.2f}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--samples', type=int, default=300)
    parser.add_argument('--warmup', type=int, default=20)
    parser.add_argument('--images', type=int, default=500,
                        help='images per side before timing')
    parser.add_argument('--standalone', action='store_true',
                        help='also time standalone mode against bare')
    parser.add_argument('--json', help='also write the summary here')
    args = parser.parse_args(argv)
    summary: dict[str, Any] = {
        'python': platform.python_version(),
        'glance': metadata.version('glance'),
        'instance-aware': metadata.version('instance-aware'),
        'machine': f'{platform.machine()}, {platform.processor() or ""}, '
                   f'{os.cpu_count()} CPUs',
    }
    print(summary)
    with tempfile.TemporaryDirectory(prefix='ia-overhead-') as tmp, \
            GlanceServer(os.path.join(tmp, 'glance'), workers=1, threads=4,
                         access_log=False, max_lifetime=3600) as server:
        stack = Side('stack', server.url)
        bare = Side('bare', server.bare_url)
        run(stack, bare, args)
        summary['in-pipeline'] = report(stack, bare)
        if args.standalone:
            with StandaloneServer(os.path.join(tmp, 'standalone'),
                                  server.bare_url, workers=1, threads=4,
                                  access_log=False,
                                  max_lifetime=3600) as proxy:
                standalone = Side('standalone', proxy.url)
                bare = Side('bare', server.bare_url)
                run(standalone, bare, args)
                summary['standalone'] = report(standalone, bare)
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as stream:
            json.dump(summary, stream, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
