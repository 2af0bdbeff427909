#!/usr/bin/env python3
"""Where the stack's time goes on everyday metadata calls, in-process.

Loads a real Glance 33 (SQLite) twice in this process, through the stack
and bare, and calls both WSGI pipelines directly: no HTTP server, no
client, so the difference is the stack's own cost and nothing else.
Prints per-call medians (stack, bare, difference, ratio) and, with
``--profile OP``, a profile of the stack side of one operation
(pyinstrument if installed, else cProfile)::

    .venv/bin/python bench/hotpath.py [--samples 400] [--profile show]

This is the tool behind the hot-path work of the data-path issue: run it
before and after a change to see the stack's per-call cost move.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import webob

from instance_aware.local import glance as local_glance
from instance_aware.local import identity

PROJECT = 'bench-project'
PATCH = 'application/openstack-images-v2.1-json-patch'
Call = Callable[[], webob.Response]


def _nova_keys(instance: str) -> dict[str, str]:
    return {'instance_uuid': instance, 'image_type': 'backup',
            'backup_type': 'daily', 'user_id': 'u', 'owner_id': PROJECT,
            'os_distro': 'ubuntu'}


class Side:
    """One pipeline called directly as a WSGI application."""

    def __init__(self, name: str, app: Any, port: int) -> None:
        self.name = name
        self.app = app
        self.port = str(port)
        self.headers = identity.identity_headers(PROJECT)

    def call(self, method: str, path: str, body: Any = None,
             content_type: str = 'application/json',
             expect: int = 200) -> webob.Response:
        req = webob.Request.blank(path, method=method, headers=self.headers)
        req.environ['SERVER_PORT'] = self.port
        if body is not None:
            req.body = json.dumps(body).encode()
            req.content_type = content_type
        response = req.get_response(self.app)
        if response.status_int != expect:
            raise SystemExit(f'{self.name} {method} {path}: '
                             f'{response.status} {response.text[:300]}')
        return response


def operations(side: Side, ids: list[str], instance: str,
               rotated: str) -> dict[str, Call]:
    """The timed calls of one side (each returns the checked response)."""
    counter = iter(range(10**9))

    def show() -> webob.Response:
        image_id = ids[next(counter) % len(ids)]
        response = side.call('GET', f'/v2/images/{image_id}')
        assert response.json['image_type'] == 'backup', response.json
        return response

    def create_patch_delete() -> webob.Response:
        created = side.call('POST', '/v2/images',
                            {'name': 'c', **_nova_keys(instance)},
                            expect=201)
        assert created.json['instance_uuid'] == instance
        image_id = created.json['id']
        side.call('PATCH', f'/v2/images/{image_id}',
                  [{'op': 'replace', 'path': '/name', 'value': 'r'}],
                  PATCH)
        return side.call('DELETE', f'/v2/images/{image_id}', expect=204)

    rotation = (f'/v2/images?image_type=backup&backup_type=daily'
                f'&instance_uuid={rotated}&limit=200'
                f'&sort_key=created_at&sort_dir=desc')
    return {
        'show': show,
        'list 25': lambda: side.call('GET', '/v2/images?limit=25'),
        'list 100': lambda: side.call('GET', '/v2/images?limit=100'),
        'rotation': lambda: side.call('GET', rotation),
        'create+patch+delete': create_patch_delete,
    }


def measure(stack: dict[str, Call], bare: dict[str, Call],
            samples: int) -> None:
    print(f"{'operation':<22}{'bare ms':>9}{'stack ms':>10}{'diff':>8}"
          f"{'ratio':>7}")
    for op in stack:
        times: dict[str, list[float]] = {'stack': [], 'bare': []}
        for turn in range(samples + 20):
            order = (('stack', stack), ('bare', bare))
            for name, calls in (order if turn % 2 else order[::-1]):
                start = time.perf_counter()
                calls[op]()
                if turn >= 20:
                    times[name].append(time.perf_counter() - start)
        s = statistics.median(times['stack']) * 1000
        b = statistics.median(times['bare']) * 1000
        print(f'{op:<22}{b:>9.3f}{s:>10.3f}{s - b:>8.3f}{s / b:>7.2f}')


def profile(call: Call, samples: int) -> None:
    try:
        import pyinstrument
    except ImportError:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(samples):
            call()
        profiler.disable()
        pstats.Stats(profiler).sort_stats('cumulative').print_stats(45)
        return
    inst = pyinstrument.Profiler(interval=0.001)
    inst.start()
    for _ in range(samples):
        call()
    inst.stop()
    print(inst.output_text(unicode=True, color=False, show_all=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--samples', type=int, default=400)
    parser.add_argument('--images', type=int, default=300)
    parser.add_argument('--profile', metavar='OP',
                        help='profile the stack side of this operation')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='ia-profile-') as tmp:
        state = local_glance.prepare(tmp)
        apps = local_glance.load_apps(state)
        stack = Side('stack', apps[local_glance.STACKED], 1)
        bare = Side('bare', apps[local_glance.BARE], 2)
        instance = str(uuid.uuid4())
        ids = [stack.call('POST', '/v2/images',
                          {'name': 'seed', **_nova_keys(instance)},
                          expect=201).json['id']
               for _ in range(args.images)]
        # Bare Glance answers with the keys it stores itself.
        bare_ids = [bare.call('POST', '/v2/images',
                              {'name': 'seed', **_nova_keys(instance)},
                              expect=201).json['id']
                    for _ in range(args.images)]
        # Nova's rotation: one instance with a handful of backups.
        rotated = str(uuid.uuid4())
        for _ in range(7):
            for side in (stack, bare):
                side.call('POST', '/v2/images',
                          {'name': 'backup', **_nova_keys(rotated)},
                          expect=201)
        stack_ops = operations(stack, ids, instance, rotated)
        bare_ops = operations(bare, bare_ids, instance, rotated)
        if args.profile:
            if args.profile not in stack_ops:
                parser.error(f'--profile: one of {", ".join(stack_ops)}')
            for _ in range(50):
                stack_ops[args.profile]()
            profile(stack_ops[args.profile], args.samples)
        else:
            measure(stack_ops, bare_ops, args.samples)
    return 0


if __name__ == '__main__':
    sys.exit(main())
