#!/usr/bin/env python3
"""Draw the rotation-listing figure of the Benchmarks page.

The points are the p50 latencies of ``bench/rotation.py`` runs recorded in
``doc/source/admin/benchmarks.rst`` (edit both together); the figure is
written to ``doc/source/admin/rotation.png``.  Needs matplotlib, which the
project does not depend on::

    .venv/bin/pip install matplotlib
    .venv/bin/python bench/plot_rotation.py
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import sys
from typing import Any

OUTPUT = (pathlib.Path(__file__).resolve().parents[1] / 'doc' / 'source'
          / 'admin' / 'rotation.png')

#: (database, side) -> [(images, p50 ms)], from the page's tables.
POINTS: dict[tuple[str, str], list[tuple[int, float]]] = {
    ('SQLite', 'bare Glance'): [
        (10_000, 64.0), (100_000, 426.9), (1_000_000, 6107.0)],
    ('SQLite', 'through the stack'): [
        (10_000, 18.3), (100_000, 28.7), (1_000_000, 24.2)],
    ('PostgreSQL', 'bare Glance'): [(1_000_000, 2719.0)],
    ('PostgreSQL', 'through the stack'): [(1_000_000, 23.5)],
}


def _pyplot() -> Any:
    try:
        return importlib.import_module('matplotlib.pyplot')
    except ImportError:
        sys.exit('matplotlib is needed: .venv/bin/pip install matplotlib')


def draw(output: pathlib.Path) -> None:
    """Latency against image count, log-log, one line per side."""
    importlib.import_module('matplotlib').use('Agg')
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    styles = {'SQLite': '-o', 'PostgreSQL': 's'}
    colours = {'bare Glance': '#c0392b', 'through the stack': '#2471a3'}
    for (database, side), points in POINTS.items():
        images, p50 = zip(*points, strict=True)
        axes.plot(images, p50, styles[database], color=colours[side],
                  label=f'{side}, {database}', markersize=6)
    axes.set_xscale('log')
    axes.set_yscale('log')
    axes.set_xlabel('images in Glance')
    axes.set_ylabel("Nova's rotation listing, p50 (ms)")
    axes.set_title('Backup-rotation listing: stack against bare Glance 33')
    axes.axhline(50, color='grey', linestyle=':', linewidth=1)
    axes.annotate('50 ms', (150_000, 50), textcoords='offset points',
                  xytext=(0, -11), color='grey', fontsize=8)
    axes.grid(True, which='major', linestyle=':', linewidth=0.5)
    axes.legend(fontsize=8, loc='upper left')
    figure.tight_layout()
    figure.savefig(output, format='png', metadata={'Software': None})
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--output', type=pathlib.Path, default=OUTPUT)
    args = parser.parse_args(argv)
    draw(args.output)
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
