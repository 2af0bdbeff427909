"""Where the bench scripts write their ``--json`` summaries."""

from __future__ import annotations

import json
import os
import time
from typing import Any

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def write(summary: dict[str, Any], path: str, prefix: str) -> str:
    """Write ``summary`` to ``path`` (empty: a dated file in
    ``bench/results``, which git ignores); the path written."""
    path = path or os.path.join(
        RESULTS, time.strftime(f'{prefix}-%Y%m%d-%H%M%S.json'))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as stream:
        json.dump(summary, stream, indent=2)
    print(f'results written to {path}')
    return path
