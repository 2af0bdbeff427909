#!/usr/bin/env python3
"""Requests per second under concurrent load, stack vs bare Glance.

One Glance 33 (gunicorn, one worker, four threads, SQLite) serves the
same database through the stack and bare; ``wrk``, a second process with
``--connections`` keep-alive connections (8 by default), drives each for
``--duration`` seconds.  Runs alternate stack and bare (and which goes
first) so that drift on a noisy machine hits both alike; the script
prints the median requests per second of each, the median ratio of paired
runs (each stack run over the bare run next to it; target: the stack at
most 5% below bare, ratio >= 0.95) and wrk's p50 and p99 latency.
Usage::

    .venv/bin/python bench/load.py [--duration 10] [--runs 5]
        [--connections 8] [--images 300] [--json [PATH]]

Operations (every image carries Nova's instance keys, so the stack does
its real work):

* ``show``: ``GET /v2/images/{id}``;
* ``list 25``: ``GET /v2/images?limit=25``;
* ``rotation``: Nova's backup-rotation listing, ``GET /v2/images?
  image_type=backup&backup_type=daily&instance_uuid=X&limit=200&
  sort_key=created_at&sort_dir=desc`` for an instance with
  ``--backups`` daily backups.

Each side lists and shows its own images (created through it, so bare
Glance holds the instance keys as its own properties and filters on
them).  Identity headers come from :mod:`tests.local.identity`
(the ``noauth`` flavor) and go to wrk as ``-H`` options.  wrk comes from
Debian (``apt-get install -y wrk``).  ``--json`` also writes the results,
by default to ``bench/results/load-<time>.json`` (not tracked by git).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from importlib import metadata
from typing import Any

import requests
import results_file  # bench/, next to this script

from tests.local import identity
from tests.local.server import GlanceServer

PROJECT = 'bench-load'
TARGET = 0.95
_UNITS = {'us': 0.001, 'ms': 1.0, 's': 1000.0, 'm': 60_000.0}


def find_wrk() -> str:
    found = shutil.which('wrk')
    if found is None:
        raise SystemExit(
            'bench/load.py needs wrk (https://github.com/wg/wrk), which '
            'is not on PATH.  Install it, on Debian or Ubuntu with:\n'
            '    apt-get install -y wrk\n'
            'or build it from source and put it on PATH.')
    return found


class Side:
    """One endpoint with the images created through it."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.session = requests.Session()
        self.session.headers.update(identity.identity_headers(PROJECT))
        self.instance = str(uuid.uuid4())
        self.image_ids: list[str] = []
        self.rps: dict[str, list[float]] = {}
        self.latency: dict[str, list[tuple[float, float]]] = {}

    def create(self, instance: str, image_type: str,
               backup_type: str | None = None) -> None:
        keys = {'instance_uuid': instance, 'image_type': image_type,
                'user_id': 'u', 'owner_id': PROJECT, 'os_distro': 'ubuntu'}
        if backup_type:
            keys['backup_type'] = backup_type
        response = self.session.post(self.url + '/v2/images', timeout=60,
                                     json={'name': 'load', **keys})
        if response.status_code != 201:
            raise SystemExit(f'{self.name}: create: {response.status_code} '
                             f'{response.text}')
        self.image_ids.append(response.json()['id'])

    def paths(self) -> dict[str, str]:
        return {
            'show': f'/v2/images/{self.image_ids[0]}',
            'list 25': '/v2/images?limit=25',
            'rotation': ('/v2/images?image_type=backup&backup_type=daily'
                         f'&instance_uuid={self.instance}&limit=200'
                         '&sort_key=created_at&sort_dir=desc'),
        }


def populate(sides: list[Side], images: int, backups: int) -> None:
    """``backups`` daily backups of each side's instance, among
    ``images`` images per side in all (snapshots and weekly backups of
    other instances), created alternately through both sides."""
    for index in range(images):
        for side in sides:
            if index < backups:
                side.create(side.instance, 'backup', 'daily')
            elif index % 3 == 0:
                side.create(side.instance, 'backup', 'weekly')
            else:
                side.create(str(uuid.uuid4()), 'snapshot')


def check(sides: list[Side], backups: int) -> None:
    """Every URL answers 200, and the rotation listing what it should."""
    for side in sides:
        for op, path in side.paths().items():
            response = side.session.get(side.url + path, timeout=60)
            if response.status_code != 200:
                raise SystemExit(f'{side.name} {op}: '
                                 f'{response.status_code} {response.text}')
            if op == 'rotation':
                found = response.json()['images']
                if len(found) != backups or any(
                        image.get('instance_uuid') != side.instance
                        for image in found):
                    raise SystemExit(f'{side.name} rotation: {len(found)} '
                                     f'images, {backups} expected')


def wrk(binary: str, url: str, args: argparse.Namespace,
        duration: float) -> dict[str, float]:
    """Run wrk once; its requests/s and latency percentiles (ms)."""
    seconds = max(1, round(duration))  # wrk takes whole seconds
    command = [binary, '--threads', str(args.threads), '--connections',
               str(args.connections), '--duration', f'{seconds}s',
               '--timeout', '30s', '--latency']
    for name, value in identity.identity_headers(PROJECT).items():
        command += ['--header', f'{name}: {value}']
    command.append(url)
    done = subprocess.run(command, capture_output=True, text=True,
                          check=False, timeout=duration + 120)
    out = done.stdout
    if done.returncode != 0:
        raise SystemExit(f'wrk failed ({done.returncode}): {out}'
                         f'{done.stderr}')
    errors = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
    sockets = re.search(r'Socket errors: (.*)', out)
    if errors or sockets:
        raise SystemExit(f'wrk saw failed requests on {url}:\n{out}')
    rps = re.search(r'Requests/sec:\s+([\d.]+)', out)
    if rps is None:
        raise SystemExit(f'no Requests/sec in the output of wrk:\n{out}')
    result = {'rps': float(rps.group(1))}
    for percent in ('50', '99'):
        found = re.search(rf'^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$', out,
                          re.MULTILINE)
        if found:
            result[f'p{percent}_ms'] = (float(found.group(1))
                                        * _UNITS[found.group(2)])
    return result


def run(binary: str, stack: Side, bare: Side,
        args: argparse.Namespace) -> None:
    ops = list(stack.paths())
    for op in ops:  # warm-up, not counted
        for side in (stack, bare):
            wrk(binary, side.url + side.paths()[op], args, args.warmup)
    for turn in range(args.runs):
        for op in ops:
            for side in ((stack, bare) if turn % 2 == 0 else (bare, stack)):
                result = wrk(binary, side.url + side.paths()[op], args,
                             args.duration)
                side.rps.setdefault(op, []).append(result['rps'])
                side.latency.setdefault(op, []).append(
                    (result.get('p50_ms', 0.0), result.get('p99_ms', 0.0)))
                print(f"  run {turn + 1}  {op:<9} {side.name:<6} "
                      f"{result['rps']:8.1f} req/s  p50 "
                      f"{result.get('p50_ms', 0):7.2f} ms  p99 "
                      f"{result.get('p99_ms', 0):7.2f} ms", flush=True)


def report(stack: Side, bare: Side) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    print(f"\n{'operation':<10}{'bare req/s':>11}{'stack req/s':>12}"
          f"{'ratio':>7}  {'target':<12}{'bare p50':>10}{'stack p50':>11}"
          f"{'bare p99':>10}{'stack p99':>11}")
    for op in stack.rps:
        bare_rps = statistics.median(bare.rps[op])
        stack_rps = statistics.median(stack.rps[op])
        # Each run of the stack next to the bare run right before or
        # after it: drift between runs cancels out.
        ratio = statistics.median(
            s / b for s, b in zip(stack.rps[op], bare.rps[op],
                                  strict=True))
        latency = {name: [statistics.median(p[i] for p in side.latency[op])
                          for i in (0, 1)]
                   for name, side in (('bare', bare), ('stack', stack))}
        rows[op] = {
            'runs': len(stack.rps[op]),
            'bare_rps': round(bare_rps, 1),
            'stack_rps': round(stack_rps, 1),
            'bare_rps_runs': bare.rps[op],
            'stack_rps_runs': stack.rps[op],
            'paired_ratio': round(ratio, 3),
            'target': TARGET,
            'met': ratio >= TARGET,
            'bare_p50_ms': latency['bare'][0],
            'stack_p50_ms': latency['stack'][0],
            'bare_p99_ms': latency['bare'][1],
            'stack_p99_ms': latency['stack'][1],
        }
        verdict = f"{TARGET:.2f} {'ok' if ratio >= TARGET else 'MISSED'}"
        print(f'{op:<10}{bare_rps:>11.1f}{stack_rps:>12.1f}{ratio:>7.2f}  '
              f'{verdict:<12}{latency["bare"][0]:>7.2f} ms'
              f'{latency["stack"][0]:>8.2f} ms{latency["bare"][1]:>7.2f} ms'
              f'{latency["stack"][1]:>8.2f} ms')
    return rows


def machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as stream:
            for line in stream:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    wrk_version = subprocess.run(
        [find_wrk(), '--version'], capture_output=True, text=True,
        check=False).stdout.split('\n', 1)[0]
    return {
        'platform': platform.platform(),
        'processor': model,
        'cpus': os.cpu_count(),
        'python': platform.python_version(),
        'glance': metadata.version('glance'),
        'gunicorn': metadata.version('gunicorn'),
        'instance-aware': metadata.version('instance-aware'),
        'wrk': ' '.join(wrk_version.split()[:2]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--duration', type=int, default=10,
                        help='seconds of each wrk run')
    parser.add_argument('--warmup', type=int, default=2,
                        help='seconds of the uncounted first run per '
                             'operation and side')
    parser.add_argument('--runs', type=int, default=5,
                        help='counted runs per operation and side')
    parser.add_argument('--connections', type=int, default=8)
    parser.add_argument('--threads', type=int, default=2,
                        help="wrk's threads")
    parser.add_argument('--images', type=int, default=300,
                        help='images per side')
    parser.add_argument('--backups', type=int, default=14,
                        help="daily backups of the rotation's instance")
    parser.add_argument('--server-threads', type=int, default=4,
                        help="threads of the gunicorn worker")
    parser.add_argument('--json', nargs='?', const='',
                        help='also write the results (default: '
                             'bench/results/load-<time>.json)')
    args = parser.parse_args(argv)
    if args.backups > min(args.images, 200):
        parser.error('--backups must be at most --images and 200')
    binary = find_wrk()
    summary: dict[str, Any] = {'machine': machine()}
    info = summary['machine']
    print(f"{info['platform']}, {info['processor']}, {info['cpus']} CPUs; "
          f"Python {info['python']}, Glance {info['glance']}, gunicorn "
          f"{info['gunicorn']}, instance-aware {info['instance-aware']}, "
          f"{info['wrk']}")
    summary['load_before'] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average {summary['load_before']}; {args.connections} "
          f'connections, {args.runs} runs of {args.duration:g} s',
          flush=True)
    with tempfile.TemporaryDirectory(prefix='ia-bench-load-') as tmp, \
            GlanceServer(tmp, workers=1, threads=args.server_threads,
                         access_log=False, max_lifetime=3 * 3600) as server:
        stack = Side('stack', server.url)
        bare = Side('bare', server.bare_url)
        populate([stack, bare], args.images, args.backups)
        check([stack, bare], args.backups)
        run(binary, stack, bare, args)
        summary['results'] = report(stack, bare)
    summary['load_after'] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average after {summary['load_after']}")
    if args.json is not None:
        results_file.write(summary, args.json, 'load')
    return 0


if __name__ == '__main__':
    sys.exit(main())
