#!/usr/bin/env python3
"""Image data through the stack vs bare Glance: throughput and memory.

One Glance 33 (gunicorn, one worker, four threads, SQLite, file store)
serves the same store through the stack and bare.  Each round uploads an
image of ``--size-mib`` (1 GiB by default; the bytes are generated on the
fly, nothing is written but Glance's own store in a temporary directory)
through both, with ``Content-Length`` and with chunked transfer encoding
(64 KiB chunks, as glanceclient sends), then downloads the stack's upload
through both ``--downloads`` times.  The side that goes first alternates
round by round (keep ``--rounds`` even), and every transfer starts after
a ``sync(2)``, so that drift on a noisy machine and the write-back of
the last upload hit both sides alike.  Usage::

    .venv/bin/python bench/data.py [--size-mib 1024] [--rounds 4]
        [--downloads 3] [--verify off,on] [--algorithm sha512]
        [--no-fingerprint] [--no-standalone] [--json [PATH]]

Everything is measured with ``[instance_aware] verify_image_data`` off
and on (a ``glance-api.conf.d`` file; the server restarts in between),
and by default also through the standalone stack
(:class:`~tests.local.server.StandaloneServer`, the
``instance_aware_proxy`` application) in front of the same Glance's bare
port.  The script prints, per operation, the median throughput of both
sides in MiB/s and their ratio (stack / bare) against the targets (0.95
without verification, 0.90 with it), and the peak growth of the resident
memory of the serving gunicorn worker during each transfer (its
children included; sampled every 10 ms in a thread; target < 32 MiB).
The machine, the versions and the speed of the hashes here come first: a
verified download cannot go faster than the hash it is checked with,
BLAKE3 (the stack's default, ``fingerprint_image_data``) or, with
``--no-fingerprint``, sha512 (Glance's default).

Downloads are whatever Glance sends: it announces ``Content-Length`` for
every image download, so there is no chunked download to measure; uploads
are measured both ways.  Glance's ``os_hash_value`` of every upload is
compared with the digest of the bytes sent, and every download is counted
to its last byte.  ``--json`` also writes the results, by default to
``bench/results/data-<time>.json`` (not tracked by git).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import platform
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import blake3
import psutil
import results_file  # bench/, next to this script

from tests.local import identity
from tests.local.server import GlanceServer, StandaloneServer

MIB = 1024 * 1024
PROJECT = 'bench-data'
#: Distinct blocks the image is made of, repeated (cheap to generate,
#: never a file).
BLOCKS = 16
TIMEOUT = 600
#: Chunks of a chunked upload: glanceclient's (and Nova's) 64 KiB.
CHUNKED_PIECE = 64 * 1024
TARGETS = {'off': 0.95, 'on': 0.90}
MAX_GROWTH = 32 * MIB
#: Seconds between two samples of the worker's resident memory.
SAMPLE_INTERVAL = 0.01


# -- the image -------------------------------------------------------------

class Image:
    """``size`` bytes made of a few seeded random blocks of one MiB."""

    def __init__(self, size: int, algorithm: str = 'sha512',
                 seed: int = 6) -> None:
        rng = random.Random(seed)
        self.size = size
        self.blocks = [rng.randbytes(MIB) for _ in range(BLOCKS)]
        hasher = hashlib.new(algorithm)
        for piece in self.pieces():
            hasher.update(piece)
        self.algorithm = algorithm
        self.digest = hasher.hexdigest()

    def pieces(self, piece_size: int = MIB) -> Iterator[memoryview]:
        """The image in pieces of ``piece_size`` (a divisor of a MiB)."""
        left = self.size
        index = 0
        while left > 0:
            block = memoryview(self.blocks[index % BLOCKS])
            for start in range(0, min(left, MIB), piece_size):
                yield block[start:min(start + piece_size, left)]
            left -= min(left, MIB)
            index += 1


# -- memory of the serving worker ------------------------------------------

class RssSampler(threading.Thread):
    """Peak resident memory of some processes and their children.

    ``mark()`` starts a new measurement: the baseline is the memory
    then, the peak the highest sample until ``growth()`` is read.
    """

    def __init__(self, pids: list[int]) -> None:
        super().__init__(name='rss-sampler', daemon=True)
        self.pids = pids
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.processes = self._processes()
        self.baseline = self.peak = self.rss()

    def _processes(self) -> list[psutil.Process]:
        found = []
        for pid in self.pids:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                found += [process, *process.children(recursive=True)]
        return found

    def rss(self) -> int:
        total = 0
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def run(self) -> None:
        while not self._done.wait(SAMPLE_INTERVAL):
            value = self.rss()
            with self._lock:
                self.peak = max(self.peak, value)

    def mark(self) -> None:
        """A new baseline (children started since are counted too)."""
        processes = self._processes()
        with self._lock:
            self.processes = processes
            self.baseline = self.peak = self.rss()

    def growth(self) -> int:
        value = self.rss()
        with self._lock:
            self.peak = max(self.peak, value)
            return self.peak - self.baseline

    def stop(self) -> None:
        self._done.set()
        self.join(5)


def workers(server: GlanceServer) -> list[int]:
    """The pids of the gunicorn workers of ``server``."""
    assert server.pid is not None
    pids = [child.pid for child in psutil.Process(server.pid).children()]
    if not pids:
        raise SystemExit('gunicorn has no worker process')
    return pids


# -- HTTP ------------------------------------------------------------------

class Endpoint:
    """One side (stack, bare or standalone) and how it is reached."""

    def __init__(self, name: str, url: str, pids: list[int]) -> None:
        self.name = name
        parsed = urllib.parse.urlsplit(url)
        assert parsed.hostname is not None and parsed.port is not None
        self.host = parsed.hostname
        self.port = parsed.port
        self.pids = pids
        self.headers = identity.identity_headers(PROJECT)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port,
                                          timeout=TIMEOUT)

    def call(self, method: str, path: str, body: Any = None,
             expect: int = 200) -> Any:
        connection = self.connection()
        try:
            headers = dict(self.headers)
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers['Content-Type'] = 'application/json'
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        if response.status != expect:
            raise SystemExit(f'{self.name}: {method} {path}: '
                             f'{response.status} {raw[:500]!r}')
        return json.loads(raw) if raw else None

    def create(self) -> str:
        created = self.call('POST', '/v2/images', {
            'name': 'bench-data', 'disk_format': 'raw',
            'container_format': 'bare'}, expect=201)
        image_id: str = created['id']
        return image_id

    def delete(self, image_id: str) -> None:
        self.call('DELETE', f'/v2/images/{image_id}', expect=204)

    def upload(self, image_id: str, image: Image, chunked: bool) -> float:
        """Seconds from the first byte sent to the 204 received."""
        connection = self.connection()
        try:
            start = time.perf_counter()
            connection.putrequest('PUT', f'/v2/images/{image_id}/file',
                                  skip_accept_encoding=True)
            for name, value in self.headers.items():
                connection.putheader(name, value)
            connection.putheader('Content-Type', 'application/octet-stream')
            if chunked:
                connection.putheader('Transfer-Encoding', 'chunked')
            else:
                connection.putheader('Content-Length', str(image.size))
            connection.endheaders()
            if chunked:
                sock = connection.sock
                assert sock is not None
                for piece in image.pieces(CHUNKED_PIECE):
                    _send_chunk(sock, piece)
                sock.sendall(b'0\r\n\r\n')
            else:
                for piece in image.pieces():
                    connection.send(piece)
            response = connection.getresponse()
            raw = response.read()
            took = time.perf_counter() - start
        finally:
            connection.close()
        if response.status != 204:
            raise SystemExit(f'{self.name}: upload: {response.status} '
                             f'{raw[:500]!r}')
        return took

    def download(self, image_id: str, size: int) -> float:
        """Seconds from the request sent to the last byte received."""
        connection = self.connection()
        buffer = bytearray(MIB)
        received = 0
        try:
            start = time.perf_counter()
            connection.request('GET', f'/v2/images/{image_id}/file',
                               headers=self.headers)
            response = connection.getresponse()
            if response.status != 200:
                raise SystemExit(f'{self.name}: download: '
                                 f'{response.status} {response.read(500)!r}')
            while count := response.readinto(buffer):
                received += count
            took = time.perf_counter() - start
        finally:
            connection.close()
        if received != size:
            raise SystemExit(f'{self.name}: download gave {received} of '
                             f'{size} bytes')
        return took


def _send_chunk(sock: socket.socket, piece: memoryview) -> None:
    """One chunk of a chunked body, in one system call if it can."""
    parts: list[bytes | memoryview] = [b'%x\r\n' % len(piece), piece,
                                       b'\r\n']
    sent = sock.sendmsg(parts)
    total = len(piece) + len(parts[0]) + 2
    if sent < total:
        sock.sendall(b''.join(parts)[sent:])


# -- one phase: a pair of endpoints, a few rounds ---------------------------

class Results:
    """Seconds and memory growth per (phase, operation, side)."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str, str], list[float]] = {}
        self.growth: dict[tuple[str, str, str], list[int]] = {}

    def add(self, key: tuple[str, str, str], seconds: float,
            growth: int) -> None:
        self.seconds.setdefault(key, []).append(seconds)
        self.growth.setdefault(key, []).append(growth)


def measure(phase: str, stack: Endpoint, bare: Endpoint, image: Image,
            args: argparse.Namespace, results: Results) -> None:
    """``args.rounds`` rounds of uploads and downloads through both
    sides; the side that goes first alternates round by round."""
    rounds, downloads, sync = args.rounds, args.downloads, args.sync
    samplers = {side.name: RssSampler(side.pids) for side in (stack, bare)}
    for sampler in samplers.values():
        sampler.start()
    try:
        warm = Image(8 * MIB, image.algorithm, seed=1)
        for side in (stack, bare):  # first requests, not measured
            warm_id = side.create()
            side.upload(warm_id, warm, chunked=True)
            side.download(warm_id, warm.size)
            side.delete(warm_id)
        for turn in range(rounds):
            order = (stack, bare) if turn % 2 == 0 else (bare, stack)
            created: list[tuple[Endpoint, str]] = []
            for framing, chunked in (('content-length', False),
                                     ('chunked', True)):
                for side in order:
                    image_id = side.create()
                    created.append((side, image_id))
                    if sync:
                        # Earlier uploads' dirty pages are written back
                        # now, not during this one.
                        os.sync()
                    sampler = samplers[side.name]
                    sampler.mark()
                    took = side.upload(image_id, image, chunked)
                    growth = sampler.growth()
                    _check_digest(side, image_id, image)
                    results.add((phase, f'upload {framing}', side.name),
                                took, growth)
                    _progress(phase, turn, f'upload {framing}', side.name,
                              image.size, took, growth)
            # Both sides download the image uploaded through the stack, so
            # that the stack's side is checked when verification is on.
            checked = created[0][1] if created[0][0] is stack else (
                created[1][1])
            for _ in range(downloads):
                for side in order:
                    if sync:
                        os.sync()
                    sampler = samplers[side.name]
                    sampler.mark()
                    took = side.download(checked, image.size)
                    growth = sampler.growth()
                    results.add((phase, 'download', side.name), took,
                                growth)
                    _progress(phase, turn, 'download', side.name,
                              image.size, took, growth)
            for side, image_id in created:
                side.delete(image_id)
    finally:
        for sampler in samplers.values():
            sampler.stop()


def _check_digest(side: Endpoint, image_id: str, image: Image) -> None:
    shown = side.call('GET', f'/v2/images/{image_id}')
    if (shown.get('os_hash_algo'), shown.get('os_hash_value'),
            shown.get('size')) != (image.algorithm, image.digest,
                                   image.size):
        raise SystemExit(f'{side.name}: image {image_id} was stored with '
                         f'other data: {shown}')


def _progress(phase: str, turn: int, op: str, side: str, size: int,
              took: float, growth: int) -> None:
    print(f'  {phase:<14} round {turn + 1}  {op:<23} {side:<10} '
          f'{size / MIB / took:8.1f} MiB/s  rss +{growth / MIB:5.1f} MiB',
          flush=True)


# -- servers ----------------------------------------------------------------

def _write_override(directory: str, verify: bool, fingerprint: bool,
                    algorithm: str | None = None) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, 'bench-data.conf'), 'w',
              encoding='utf-8') as stream:
        if algorithm:
            stream.write(f'[DEFAULT]\nhashing_algorithm = {algorithm}\n\n')
        stream.write(f'[instance_aware]\nverify_image_data = {verify}\n'
                     f'fingerprint_image_data = {fingerprint}\n')


def run(args: argparse.Namespace, image: Image, results: Results) -> None:
    with tempfile.TemporaryDirectory(prefix='ia-bench-data-') as tmp:
        glance_state = os.path.join(tmp, 'glance')
        standalone_state = os.path.join(tmp, 'standalone')
        for mode in args.verify:
            verify = mode == 'on'
            _write_override(os.path.join(glance_state, 'glance-api.conf.d'),
                            verify, args.fingerprint, args.algorithm)
            with GlanceServer(glance_state, workers=1, threads=4,
                              access_log=False,
                              max_lifetime=4 * 3600) as server:
                pids = workers(server)
                bare = Endpoint('bare', server.bare_url, pids)
                stack = Endpoint('stack', server.url, pids)
                measure(f'verify {mode}', stack, bare, image, args,
                        results)
                if not args.standalone or args.algorithm != 'sha512':
                    # The standalone stack hashes with sha512 unless its
                    # paste section says otherwise: not comparable then.
                    continue
                _write_override(os.path.join(standalone_state,
                                             'instance-aware.conf.d'),
                                verify, args.fingerprint)
                with StandaloneServer(standalone_state, server.bare_url,
                                      workers=1, threads=4,
                                      access_log=False,
                                      max_lifetime=4 * 3600) as proxy:
                    standalone = Endpoint('standalone', proxy.url,
                                          workers(proxy))
                    measure(f'standalone {mode}', standalone, bare, image,
                            args, results)


# -- report -----------------------------------------------------------------

def hash_speed(algo: str, size: int = 256 * MIB) -> float:
    """MiB/s of ``hashlib`` (or BLAKE3) on this machine, 1 MiB buffers."""
    block = b'\x5a' * MIB
    hasher: Any = (blake3.blake3() if algo == 'blake3'
                   else hashlib.new(algo))
    start = time.perf_counter()
    for _ in range(size // MIB):
        hasher.update(block)
    return size / MIB / (time.perf_counter() - start)


def machine() -> dict[str, Any]:
    return {
        'platform': platform.platform(),
        'machine': platform.machine(),
        'processor': _cpu_model(),
        'cpus': os.cpu_count(),
        'memory_gib': round(psutil.virtual_memory().total / 1024 ** 3, 1),
        'python': platform.python_version(),
        'glance': metadata.version('glance'),
        'gunicorn': metadata.version('gunicorn'),
        'instance-aware': metadata.version('instance-aware'),
        'sha512_mib_s': round(hash_speed('sha512')),
        'sha256_mib_s': round(hash_speed('sha256')),
        'blake3_mib_s': round(hash_speed('blake3')),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open('/proc/cpuinfo',
                                             encoding='utf-8') as stream:
        for line in stream:
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    return platform.processor()


def report(results: Results, size: int, algorithm: str,
           bound: float) -> dict[str, Any]:
    """The table; ``bound`` is what ``algorithm`` hashes at here (MiB/s),
    the most a verified download can do."""
    rows: dict[str, Any] = {}
    print(f"\n{'phase':<15}{'operation':<23}{'bare MiB/s':>11}"
          f"{'stack MiB/s':>12}{'ratio':>7}  {'target':<12}"
          f"{'bare rss+':>10}{'stack rss+':>11}")
    for phase, op, side in results.seconds:
        if side == 'bare':
            continue
        bare = (phase, op, 'bare')
        stack = (phase, op, side)
        bare_rate = size / MIB / statistics.median(results.seconds[bare])
        stack_rate = size / MIB / statistics.median(results.seconds[stack])
        ratio = stack_rate / bare_rate
        target = TARGETS[phase.split()[-1]]
        bare_growth = max(results.growth[bare])
        stack_growth = max(results.growth[stack])
        key = f'{phase}: {op}'
        rows[key] = {
            'side': side,
            'samples': len(results.seconds[stack]),
            'bare_mib_s': round(bare_rate, 1),
            'stack_mib_s': round(stack_rate, 1),
            'bare_seconds': [round(s, 3) for s in results.seconds[bare]],
            'stack_seconds': [round(s, 3) for s in results.seconds[stack]],
            'ratio': round(ratio, 3),
            'target': target,
            'met': ratio >= target,
            'bare_rss_growth_mib': round(bare_growth / MIB, 1),
            'stack_rss_growth_mib': round(stack_growth / MIB, 1),
            'rss_met': stack_growth < MAX_GROWTH,
        }
        verdict = f"{target:.2f} {'ok' if ratio >= target else 'MISSED'}"
        print(f'{phase:<15}{op:<23}{bare_rate:>11.1f}{stack_rate:>12.1f}'
              f'{ratio:>7.2f}  {verdict:<12}{bare_growth / MIB:>6.1f} MiB'
              f'{stack_growth / MIB:>7.1f} MiB')
    verified = [row for key, row in rows.items()
                if key.endswith(' on: download')]
    for row in verified:
        row['hash_bound_mib_s'] = round(bound, 1)
        row['of_hash_bound'] = round(row['stack_mib_s'] / bound, 3)
    if verified:
        shares = ', '.join(f"{row['of_hash_bound']:.0%}" for row in verified)
        print(f'A verified download cannot beat {algorithm} here, '
              f'{bound:.0f} MiB/s on one core; the verified downloads ran '
              f'at {shares} of it.')
    peak = max(max(values) for values in results.growth.values())
    print(f'Peak RSS growth of a serving worker: {peak / MIB:.1f} MiB '
          f"(target < {MAX_GROWTH // MIB} MiB: "
          f"{'ok' if peak < MAX_GROWTH else 'MISSED'}).")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size-mib', type=int, default=1024,
                        help='size of the image (MiB)')
    parser.add_argument('--rounds', type=int, default=4,
                        help='rounds (even: each side goes first as often)')
    parser.add_argument('--downloads', type=int, default=3,
                        help='downloads per side and round')
    parser.add_argument('--verify', default='off,on',
                        type=lambda value: [v for v in value.split(',')
                                            if v],
                        help='verify_image_data settings to measure '
                             '(off, on or both)')
    parser.add_argument('--algorithm', default='sha512',
                        help="Glance's [DEFAULT] hashing_algorithm, which "
                             'the stack follows (sha512: the standalone '
                             'stack is measured too)')
    parser.add_argument('--no-fingerprint', dest='fingerprint',
                        action='store_false',
                        help='fingerprint_image_data = false: check '
                             'downloads with --algorithm, not BLAKE3')
    parser.add_argument('--no-sync', dest='sync', action='store_false',
                        help='do not sync(2) before each transfer')
    parser.add_argument('--no-standalone', dest='standalone',
                        action='store_false',
                        help='skip the standalone stack')
    parser.add_argument('--json', nargs='?', const='',
                        help='also write the results (default: '
                             'bench/results/data-<time>.json)')
    args = parser.parse_args(argv)
    if set(args.verify) - set(TARGETS) or not args.verify:
        parser.error('--verify takes off, on or off,on')
    summary: dict[str, Any] = {'machine': machine()}
    info = summary['machine']
    print(f"{info['platform']}, {info['processor']}, {info['cpus']} CPUs, "
          f"{info['memory_gib']} GiB; Python {info['python']}, Glance "
          f"{info['glance']}, gunicorn {info['gunicorn']}, instance-aware "
          f"{info['instance-aware']}; hashlib sha512 "
          f"{info['sha512_mib_s']} MiB/s, sha256 {info['sha256_mib_s']} "
          f"MiB/s, blake3 {info['blake3_mib_s']} MiB/s")
    summary['load_before'] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average {summary['load_before']}; image "
          f'{args.size_mib} MiB, {args.rounds} rounds', flush=True)
    image = Image(args.size_mib * MIB, args.algorithm)
    results = Results()
    started = time.monotonic()
    run(args, image, results)
    summary['load_after'] = [round(x, 2) for x in os.getloadavg()]
    summary['seconds'] = round(time.monotonic() - started)
    summary['size_mib'] = args.size_mib
    # What a verified download is checked with (uploads hash both).
    checked_with = 'blake3' if args.fingerprint else args.algorithm
    bound = hash_speed(checked_with)
    summary['algorithm'] = args.algorithm
    summary['fingerprint'] = args.fingerprint
    summary['results'] = report(results, image.size, checked_with, bound)
    print(f"load average after {summary['load_after']}; "
          f"{summary['seconds']} s")
    if args.json is not None:
        results_file.write(summary, args.json, 'data')
    return 0


if __name__ == '__main__':
    sys.exit(main())
