#!/usr/bin/env python3
"""Where the stack's time goes on everyday metadata calls, in-process.

Loads a real Glance 33 (SQLite) twice in this process, through the stack
and bare, and calls both WSGI pipelines directly: no HTTP server, no
client, so the difference is the stack's own cost and nothing else.
Prints per-call medians (stack, bare, difference, ratio).  With
``--profile OP``: a profile of the stack side of one operation
(pyinstrument if installed, else cProfile).  With ``--pieces OP`` (a
read): the stack alone, the registry's answers recorded once and then
replayed, and the mean time of each of its main pieces inside the
request, timed without a profiler's distortion::

    .venv/bin/python bench/hotpath.py [--samples 400] [--profile show]
    .venv/bin/python bench/hotpath.py --pieces show

This is the tool behind the hot-path work of the data-path issue: run it
before and after a change to see the stack's per-call cost move.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import gc
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

from instance_aware.capture.filter import CapturingFilter
from instance_aware.filters import data_integrity, location_policy
from instance_aware.http import documents
from instance_aware.policies import context as ia_context
from instance_aware.policies import enforcer
from instance_aware.store import records
from tests.local import glance as local_glance
from tests.local import identity

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


#: What ``--pieces`` times: (owner, attribute, label).  Only functions
#: that do not call themselves (a recursive one would count its inner
#: calls again).
PIECES: tuple[tuple[Any, str, str], ...] = (
    (location_policy.LocationPolicyFilter, '__call__', 'the whole stack'),
    (CapturingFilter, 'give_back', 'giving keys back'),
    (records.Records, 'values_of', '  mapping database read'),
    (enforcer.Enforcer, 'decide', 'policy decisions'),
    (ia_context, 'from_environ', "the caller's context"),
    (location_policy.LocationPolicyFilter, 'process_response',
     'location scrub'),
    (documents, 'read', 'JSON read'),
    (documents, 'finish', 'JSON write'),
)


class Replay:
    """The registry below the stack, answering from a recording.

    Records the answers of the application below the innermost filter,
    then replays them: timed, the stack runs alone, in the same process
    and on the same requests as it does in front of Glance.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.answers: dict[tuple[str, str, str], tuple[str, list[Any],
                                                       bytes]] = {}
        self.replaying = False

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        key = (environ['REQUEST_METHOD'], environ.get('PATH_INFO', ''),
               environ.get('QUERY_STRING', ''))
        if self.replaying:
            status, headers, body = self.answers[key]
            start_response(status, list(headers))
            return [body]
        seen: dict[str, Any] = {}

        def record(status: str, headers: list[Any],
                   exc_info: Any = None) -> Any:
            seen['status'], seen['headers'] = status, headers
            return start_response(status, headers, exc_info)

        body = b''.join(self.app(environ, record))
        self.answers[key] = (seen['status'], list(seen['headers']), body)
        return [body]


#: Operations ``--pieces`` can replay (writes make new ids every time).
READS = ('show', 'list 25', 'list 100', 'rotation')


def pieces(call: Call, samples: int, distinct: int) -> None:
    """Time the stack alone and its pieces (see :data:`PIECES`);
    ``distinct``: calls before the operation repeats its requests."""
    # The innermost filter of the stacked pipeline (the only one loaded).
    inner = next(obj for obj in gc.get_objects()
                 if isinstance(obj, data_integrity.DataIntegrityFilter))
    replay = inner.application = Replay(inner.application)
    for _ in range(distinct):  # record each request the operation makes
        call()
    replay.replaying = True
    totals: dict[str, int] = collections.defaultdict(int)
    counts: collections.Counter[str] = collections.Counter()
    originals = []
    for owner, name, label in PIECES:
        original = getattr(owner, name)
        originals.append((owner, name, original))
        setattr(owner, name, _timed(original, label, totals, counts))
    try:
        for _ in range(50):
            call()
        totals.clear()
        counts.clear()
        for _ in range(samples):
            call()
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    print('The stack alone (the registry replayed), mean time per call; a '
          'piece indented under another is part of it:')
    print(f"{'piece':<28}{'us/call':>9}{'calls':>7}")
    for _owner, _name, label in PIECES:
        print(f'{label:<28}{totals[label] / samples / 1000:>9.1f}'
              f'{counts[label] / samples:>7.1f}')


def _timed(function: Callable[..., Any], label: str,
           totals: dict[str, int],
           counts: collections.Counter[str]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter_ns()
        try:
            return function(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter_ns() - started
            counts[label] += 1
    return timed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--samples', type=int, default=400)
    parser.add_argument('--images', type=int, default=300)
    parser.add_argument('--profile', metavar='OP',
                        help='profile the stack side of this operation')
    parser.add_argument('--pieces', metavar='OP',
                        help='time the stack alone and its pieces on this '
                             'operation (the registry replayed)')
    args = parser.parse_args(argv)
    if args.pieces is not None and args.pieces not in READS:
        parser.error(f'--pieces: one of {", ".join(READS)}')
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
        if args.pieces:
            pieces(stack_ops[args.pieces], args.samples, len(ids))
        elif args.profile:
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
