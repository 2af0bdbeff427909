"""The in-process benchmark runs and reports what the docs quote.

``bench/hotpath.py`` loads Glance into the global configuration, so it
runs in a subprocess of its own, with tiny sample counts: this checks
that it works and that its numbers hang together, not how fast anything
is.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).parents[2] / 'bench' / 'hotpath.py'


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), '--images', '4', *args],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_pieces_of_a_show_add_up() -> None:
    out = _run('--pieces', 'show', '--samples', '20')
    rows = dict(re.findall(r'^\s*(\S.*?)\s+(\d+\.\d)\s+\d+\.\d$', out,
                           re.MULTILINE))
    numbers = {label: float(value) for label, value in rows.items()}
    assert set(numbers) == {
        'the whole stack', 'giving keys back', 'mapping database read',
        'policy decisions', "the caller's context", 'location scrub',
        'JSON read', 'JSON write'}, out
    assert all(value > 0 for value in numbers.values()), out
    # A part never takes longer than what contains it.
    assert numbers['mapping database read'] < numbers['giving keys back']
    assert numbers['giving keys back'] < numbers['the whole stack']
    calls = re.search(r'^giving keys back\s+\S+\s+(\S+)$', out, re.MULTILINE)
    assert calls is not None and calls.group(1) == '2.0', out  # two concerns


def test_pieces_refuses_a_write() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), '--pieces', 'create+patch+delete'],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2
    assert '--pieces: one of show, list 25, list 100, rotation' in (
        done.stderr)


def test_ratios_of_every_operation() -> None:
    out = _run('--samples', '3')
    ops = re.findall(r'^(show|list 25|list 100|rotation|create\+patch\+'
                     r'delete)\s+(\d+\.\d{3})\s+(\d+\.\d{3})\s+(-?\d+\.\d{3})'
                     r'\s+(\d+\.\d{2})$', out, re.MULTILINE)
    assert [op[0] for op in ops] == [
        'show', 'list 25', 'list 100', 'rotation', 'create+patch+delete'], out
    for _op, bare, stack, diff, ratio in ops:
        assert abs(float(stack) - float(bare) - float(diff)) < 0.002
        assert abs(float(stack) / float(bare) - float(ratio)) < 0.006
